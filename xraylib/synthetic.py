"""Deterministic synthetic chest-X-ray-LIKE images for demos and tests.

THIS IS NOT MEDICAL DATA. The images are drawn procedurally (ellipses, arcs and
filtered noise) to look roughly like frontal (PA) chest radiographs so that the
notebooks and tests can run end to end without the real Kaggle datasets. They
carry no clinical information and must never be used to build or judge a
medical model.

Each image comes with a ground-truth lesion mask and a lung-field mask. Two
on-disk layouts mimic the real datasets:

* ``task="binary"``: Kermany "chest_xray" layout,
  ``chest_xray/{train,test}/{NORMAL,PNEUMONIA}/synpatNNNN_k.png``.
* ``task="multiclass"``: COVID-19 Radiography Database layout,
  ``COVID-19_Radiography_Dataset/<Class>/{images,masks}/<Class>-synpatNNNN_k.png``.

Lesion masks are written to ``<dataset_root>/lesion_masks/<image path relative
to dataset_root>``. Only numpy, PIL, scipy and pandas are used.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Mapping

import numpy as np
import pandas as pd
from PIL import Image
from scipy import ndimage, special

CLASSES = {"binary": ("NORMAL", "PNEUMONIA"),
           "multiclass": ("COVID", "Lung_Opacity", "Normal", "Viral Pneumonia")}
DEFAULT_N_PATIENTS = {
    "binary": {"NORMAL": 70, "PNEUMONIA": 130},
    "multiclass": {"COVID": 60, "Lung_Opacity": 90, "Normal": 150, "Viral Pneumonia": 40},
}
DATASET_ROOTS = {"binary": "chest_xray", "multiclass": "COVID-19_Radiography_Dataset"}


def scaled_patients(task: str, scale: float) -> dict[str, int]:
    """Patients per class: :data:`DEFAULT_N_PATIENTS` of ``task`` times ``scale`` (``synthesize.patients_scale``)."""
    if task not in DEFAULT_N_PATIENTS:
        raise ValueError(f"task: expected one of {list(DEFAULT_N_PATIENTS)}, got {task!r}")
    if isinstance(scale, bool) or not isinstance(scale, (int, float)) or not scale > 0:
        raise ValueError(f"synthesize.patients_scale.{task} must be a number > 0, got {scale!r}")
    return {label: max(1, int(round(n * scale))) for label, n in DEFAULT_N_PATIENTS[task].items()}
# Relative lesion strength per class (multiplies the difficulty-driven contrast).
_STRENGTH = {"PNEUMONIA": 1.0, "COVID": 0.75, "Lung_Opacity": 0.85, "Viral Pneumonia": 0.8}


def _lerp(a: float, b: float, t: float) -> float:
    return a + (b - a) * t


def _is_int(x) -> bool:
    return isinstance(x, (int, np.integer)) and not isinstance(x, bool)


def _rng(rng_or_seed) -> np.random.Generator:
    if isinstance(rng_or_seed, np.random.Generator):
        return rng_or_seed
    if isinstance(rng_or_seed, np.random.SeedSequence) or (_is_int(rng_or_seed) and rng_or_seed >= 0):
        return np.random.default_rng(rng_or_seed)
    raise ValueError("rng_or_seed: expected a numpy Generator, SeedSequence or non-negative int, "
                     f"got {rng_or_seed!r}")


def _check(task="binary", image_size=128, difficulty=0.5) -> None:
    if task not in CLASSES:
        raise ValueError(f"task: expected one of {sorted(CLASSES)}, got {task!r}")
    if not _is_int(image_size) or image_size < 32:
        raise ValueError(f"image_size: expected an int >= 32, got {image_size!r}")
    if (not isinstance(difficulty, (int, float, np.number)) or isinstance(difficulty, bool)
            or not 0.0 <= float(difficulty) <= 1.0):
        raise ValueError(f"difficulty: expected a number in [0, 1], got {difficulty!r}")


def sample_anatomy(rng_or_seed, difficulty: float = 0.5) -> dict:
    """Draws one synthetic patient's anatomy (shared by all images of that patient).

    Args:
        rng_or_seed: ``numpy.random.Generator``, ``SeedSequence`` or non-negative int.
        difficulty: In [0, 1]; higher values give more anatomical variation.

    Returns:
        A dict understood by :func:`make_image` (``anatomy=``).
    """
    _check(difficulty=difficulty)
    rng = _rng(rng_or_seed)
    v = _lerp(0.6, 1.6, float(difficulty))
    u = lambda lo, hi: float(rng.uniform(lo, hi))  # noqa: E731
    return {
        "rot": float(np.deg2rad(v * u(-3.0, 3.0))), "dx": v * u(-0.04, 0.04), "dy": v * u(-0.04, 0.04),
        "lung_w": 1 + v * u(-0.07, 0.07), "lung_h": 1 + v * u(-0.06, 0.06), "asym": v * u(-0.05, 0.05),
        "body_w": 1 + v * u(-0.05, 0.05), "heart": 1 + v * u(-0.06, 0.10), "heart_dx": v * u(-0.03, 0.03),
        "rib_spacing": u(0.15, 0.19), "rib_curve": u(0.35, 0.6), "rib_phase": u(0.0, 1.0),
        "brightness": v * u(-0.05, 0.05), "gain": 1 + v * u(-0.12, 0.12),
        "lobar": bool(rng.random() < 0.35), "side": int(rng.integers(2)),
    }


def _smooth(rng: np.random.Generator, shape, sigma: float) -> np.ndarray:
    f = ndimage.gaussian_filter(rng.standard_normal(shape), sigma, mode="reflect")
    return f / (f.std() + 1e-9)


_sigmoid = special.expit


def _segments(x, y, segs, width) -> np.ndarray:
    """Max over line segments ``(x0, y0, x1, y1, amp)`` of a Gaussian ridge profile."""
    out = np.zeros_like(x)
    for x0, y0, x1, y1, amp in segs:
        dx, dy = x1 - x0, y1 - y0
        t = np.clip(((x - x0) * dx + (y - y0) * dy) / (dx * dx + dy * dy + 1e-12), 0.0, 1.0)
        d2 = (x - x0 - t * dx) ** 2 + (y - y0 - t * dy) ** 2
        out = np.maximum(out, amp * (1 - 0.6 * t) * np.exp(-d2 / width ** 2))
    return out


def _lung(x, y, cx, a, top, bottom):
    """Teardrop lung field: rounded apex, domed diaphragm, deep costophrenic angle."""
    h = bottom - top
    t = (y - top) / h
    w = a * np.sqrt(1.0 - (1.0 - np.clip(t / 0.45, 0.0, 1.0)) ** 2) * (0.88 + 0.12 * np.clip(t, 0, 1))
    lat = np.clip((x - cx) * np.sign(cx) / a * 0.5 + 0.5, 0.0, 1.0)  # 0 medial .. 1 lateral
    ybot = bottom - h * (0.10 * (1 - (2 * lat - 1) ** 2) + 0.07 * (1 - lat))
    return (np.abs(x - cx - 0.12 * a * np.sign(cx) * (t - 0.5)) < w) & (y > top) & (y < ybot)


def _blob(rng, x, y, cx, cy, rx, ry, rough, edge=0.12):
    ang = rng.uniform(0, np.pi)
    c, s = np.cos(ang), np.sin(ang)
    u = ((x - cx) * c + (y - cy) * s) / rx
    v = (-(x - cx) * s + (y - cy) * c) / ry
    return _sigmoid((1.0 - np.sqrt(u * u + v * v) * (1 + rough)) / edge)


def _pick(rng, x, y, mask, fallback):
    idx = np.flatnonzero(mask if mask.any() else fallback)
    i = idx[rng.integers(idx.size)]
    return x.flat[i], y.flat[i]


def _lesion(label, rng, x, y, lungs, a, d, px):
    """Returns (opacity field in [0, 1], binary lesion mask) for one diseased image."""
    lung = lungs[0] | lungs[1]
    S = x.shape[0]
    sz = _lerp(1.0, 0.6, d)
    rough = 0.3 * _smooth(rng, x.shape, S / 24)
    tex = _smooth(rng, x.shape, S / 48)
    rel = []  # relative height inside each lung: 0 apex .. 1 base
    for m in lungs:
        ys = y[m] if m.any() else y[lung]
        rel.append((y - ys.min()) / (np.ptp(ys) + 1e-9))
    L = np.zeros_like(x)
    if label == "PNEUMONIA":
        s = a["side"]
        if a["lobar"]:
            z0 = _lerp(0.35, 0.6, d) + rng.uniform(0, 0.12)
            region = lungs[s] & (rel[s] + rng.uniform(-0.3, 0.3) * (x - x[lungs[s]].mean()) > z0)
            L = ndimage.gaussian_filter(region.astype(float), 1.5 * S / 128) * (0.8 + 0.1 * tex)
        else:
            cx, cy = _pick(rng, x, y, lungs[s] & (rel[s] > 0.35) & (rel[s] < 0.9), lung)
            r = rng.uniform(0.10, 0.17) * sz
            L = _blob(rng, x, y, cx, cy, r, r * rng.uniform(0.7, 1.3), rough) * (0.85 + 0.1 * tex)
    elif label == "Lung_Opacity":
        sides = [0, 1] if rng.random() < 0.5 else [int(rng.integers(2))]
        for _ in range(int(rng.integers(2, 5))):
            s = sides[int(rng.integers(len(sides)))]
            cx, cy = _pick(rng, x, y, lungs[s] & (rel[s] > 0.1), lung)
            r = rng.uniform(0.05, 0.10) * sz
            L = np.maximum(L, _blob(rng, x, y, cx, cy, r, r * rng.uniform(0.6, 1.4), 1.5 * rough, 0.25))
        L *= 0.8 + 0.15 * tex
    elif label == "COVID":
        dist = ndimage.distance_transform_edt(lung) * px
        periph = np.exp(-dist / (0.16 * _lerp(1.0, 0.7, d)))
        patch = _sigmoid(2.0 * tex + 1.0)
        for s, m in enumerate(lungs):
            xs = x[m]
            lateral = np.clip(((x - xs.mean()) * np.sign(xs.mean()) / (np.ptp(xs) / 2) + 0.6) / 1.1, 0, 1)
            lower = _sigmoid((rel[s] - rng.uniform(0.35, 0.5)) / 0.08)
            L = L + m * periph * lateral * lower * patch
        L = ndimage.gaussian_filter(L, 1.5 * S / 128)
        L /= L.max() + 1e-9
    elif label == "Viral Pneumonia":
        n = rng.standard_normal(x.shape)
        bp = ndimage.gaussian_filter(n, 1.3 * S / 128) - ndimage.gaussian_filter(n, 3.5 * S / 128)
        lines = np.exp(-(bp / (0.3 * bp.std() + 1e-9)) ** 2)
        env = _sigmoid(6.0 * (_smooth(rng, x.shape, S / 10) + _lerp(0.8, 0.1, d)))
        env = ndimage.gaussian_filter(env * lung, 2 * S / 128)
        L = env * (0.3 + 0.7 * lines)
        mask = (env > 0.5) & lung
        return L * lung, mask if mask.any() else (env >= 0.5 * env.max()) & lung
    L = L * lung
    mask = (L > 0.35) & lung
    return L, mask if mask.any() else (L >= 0.5 * L.max()) & lung


def make_image(label: str, task: str, rng_or_seed, image_size: int = 128, difficulty: float = 0.5,
               *, anatomy: dict | None = None):
    """Draws one synthetic chest-X-ray-like image (NOT medical data) in memory.

    Args:
        label: A class name from ``CLASSES[task]``.
        task: ``"binary"`` or ``"multiclass"``.
        rng_or_seed: ``numpy.random.Generator``, ``SeedSequence`` or non-negative int.
        image_size: Side length in pixels (>= 32).
        difficulty: In [0, 1]; higher means fainter/smaller lesions, more noise,
            more anatomical variation and more confounders.
        anatomy: Optional patient anatomy from :func:`sample_anatomy`; drawn from
            ``rng_or_seed`` when omitted.

    Returns:
        ``(image, lesion_mask, lung_mask)``: uint8 ``(S, S)`` image and two bool
        ``(S, S)`` masks. ``lesion_mask`` is empty for normal classes and always
        lies inside ``lung_mask``.

    Raises:
        ValueError: On an unknown task/label or out-of-range size/difficulty.
    """
    _check(task, image_size, difficulty)
    if label not in CLASSES[task]:
        raise ValueError(f"label: expected one of {CLASSES[task]} for task {task!r}, got {label!r}")
    rng, d, S = _rng(rng_or_seed), float(difficulty), int(image_size)
    a = sample_anatomy(rng, d) if anatomy is None else anatomy
    px = 2.0 / S
    lin = (np.arange(S) + 0.5) * px - 1.0
    Y, X = np.meshgrid(lin, lin, indexing="ij")
    th = a["rot"] + np.deg2rad(rng.uniform(-0.6, 0.6))
    x0 = X - a["dx"] - rng.uniform(-0.015, 0.015)
    y0 = Y - a["dy"] - rng.uniform(-0.015, 0.015)
    x, y = np.cos(th) * x0 + np.sin(th) * y0, -np.sin(th) * x0 + np.cos(th) * y0
    blur = lambda m, s=1.2: ndimage.gaussian_filter(m.astype(float), s * S / 128)  # noqa: E731

    bx = x / (0.93 * a["body_w"])
    body = _sigmoid((1 - (np.abs(bx) ** 2.4 + np.abs((y - 0.2) / 1.15) ** 2.4)) / 0.06) * (1 - 0.35 * bx ** 4)
    lw, lh = a["lung_w"], a["lung_h"]
    hx, hy = (x - 0.12 - a["heart_dx"]) / (0.31 * a["heart"]), (y - 0.33) / (0.25 * a["heart"])
    heart = (hx * 0.94 + hy * 0.34) ** 2 + (hy * 0.94 - hx * 0.34) ** 2 < 1
    right = _lung(x, y, -0.41 * lw * (1 + a["asym"]), 0.29 * lw, -0.76 * lh, 0.50 * lh) & ~heart
    left = _lung(x, y, 0.41 * lw, 0.27 * lw * (1 - a["asym"]), -0.72 * lh, 0.56 * lh) & ~heart
    lung = right | left
    lung_s = blur(lung)

    img = 0.05 + 0.55 * body
    v = y - a["rib_curve"] * x ** 2
    ph = (v / a["rib_spacing"] + a["rib_phase"]) % 1.0 - 0.5
    cage = _sigmoid((0.82 - np.abs(x)) / 0.04) * _sigmoid((0.58 - y) / 0.05) * _sigmoid((y + 0.85) / 0.05)
    img += 0.055 * np.exp(-(ph / 0.12) ** 2) * cage * (0.35 + 0.65 * lung_s)
    hilum = np.exp(-((np.abs(x) - 0.2) ** 2 + (y + 0.05) ** 2) / 0.06)
    img -= lung_s * (0.42 - 0.10 * hilum - 0.06 * _sigmoid((y - 0.3) / 0.1))
    img += 0.06 * blur(heart, 2.0) + 0.07 * _sigmoid((0.065 - np.abs(x)) / 0.012) * body \
        * (1 + 0.2 * np.cos(2 * np.pi * y / 0.11)) * (0.5 + 0.5 * _sigmoid(-(y - 0.05) / 0.1))
    clav = [(0.08 * sgn, -0.70 * lh, 0.62 * sgn, -0.86 * lh, 1.0) for sgn in (-1, 1)]
    img += 0.10 * _segments(x, y, clav, 0.035) * body
    vessels = []
    for sgn in (-1, 1):
        hx0, hy0 = 0.2 * sgn, -0.05
        for ang in rng.uniform(-1.2, 1.2, 7):
            ln = rng.uniform(0.2, 0.42)
            vessels.append((hx0, hy0, hx0 + sgn * ln * np.cos(ang), hy0 + ln * np.sin(ang), 1.0))
    img += _lerp(0.04, 0.10, d) * rng.uniform(0.6, 1.3) * _segments(x, y, vessels, 0.016) * lung_s
    if rng.random() < 0.6 * d:  # nipple shadows: benign round densities over the lower lungs
        img += 0.06 * _segments(x, y, [(s * 0.4, 0.42, s * 0.4, 0.42, 1.0) for s in (-1, 1)], 0.05)

    lesion = np.zeros((S, S), bool)
    if label not in ("NORMAL", "Normal"):
        L, lesion = _lesion(label, rng, x, y, (right, left), a, d, px)
        contrast = _lerp(0.45, 0.08, d) * _STRENGTH[label] * rng.uniform(0.8, 1.15)
        img += contrast * L * lung_s

    img *= 1 + _lerp(0.04, 0.10, d) * ndimage.zoom(rng.standard_normal((5, 5)), S / 5, order=3)[:S, :S]
    img = a["brightness"] + rng.uniform(-0.02, 0.02) + a["gain"] * img
    img = ndimage.gaussian_filter(img, 0.5 * S / 128)
    img += _lerp(0.012, 0.045, d) * np.sqrt(np.clip(img, 0, 1) / 0.5 + 0.05) * rng.standard_normal((S, S))
    out = np.round(np.clip(img, 0.0, 1.0) * 255).astype(np.uint8)
    return out, lesion & lung, lung


def _check_counts(task, n_patients, images_per_patient, test_fraction, seed):
    names = CLASSES[task]
    if n_patients is None:
        n_patients = DEFAULT_N_PATIENTS[task]
    elif _is_int(n_patients):
        n_patients = {c: n_patients for c in names}
    if not isinstance(n_patients, Mapping):
        raise ValueError(f"n_patients: expected None, an int or a mapping class -> int, got {n_patients!r}")
    bad = set(n_patients) - set(names)
    if bad:
        raise ValueError(f"n_patients: expected keys from {names}, got unknown {sorted(bad)}")
    counts = {c: n_patients.get(c, 0) for c in names}
    for c, n in counts.items():
        if not _is_int(n) or n < 0:
            raise ValueError(f"n_patients: expected a non-negative int for {c!r}, got {n!r}")
    ipp = (images_per_patient, images_per_patient) if _is_int(images_per_patient) else images_per_patient
    if (not isinstance(ipp, (tuple, list)) or len(ipp) != 2 or not all(_is_int(k) for k in ipp)
            or not 1 <= ipp[0] <= ipp[1]):
        raise ValueError("images_per_patient: expected an int >= 1 or a (min, max) pair with "
                         f"1 <= min <= max, got {images_per_patient!r}")
    if not isinstance(test_fraction, (int, float)) or not 0.0 <= test_fraction < 1.0:
        raise ValueError(f"test_fraction: expected a number in [0, 1), got {test_fraction!r}")
    if not _is_int(seed) or seed < 0:
        raise ValueError(f"seed: expected a non-negative int, got {seed!r}")
    return counts, (int(ipp[0]), int(ipp[1]))


def generate(out_dir, task: str, *, n_patients: int | Mapping[str, int] | None = None,
             images_per_patient: int | tuple[int, int] = (1, 3), image_size: int = 128,
             difficulty: float = 0.5, seed: int = 0, test_fraction: float = 0.25,
             overwrite: bool = False) -> pd.DataFrame:
    """Writes a synthetic chest-X-ray-like dataset (NOT medical data) to disk.

    Args:
        out_dir: Parent folder; the dataset goes to ``out_dir/chest_xray`` (binary)
            or ``out_dir/COVID-19_Radiography_Dataset`` (multiclass).
        task: ``"binary"`` (Kermany layout with train/test split by patient) or
            ``"multiclass"`` (COVID-19 Radiography Database layout, no split).
        n_patients: Patients per class (mapping, or one int for every class);
            ``None`` uses ``DEFAULT_N_PATIENTS[task]``.
        images_per_patient: ``(min, max)`` inclusive, or a fixed int.
        image_size: Side length in pixels (>= 32).
        difficulty: In [0, 1]; see :func:`make_image`.
        seed: Non-negative int; same arguments give byte-identical files.
        test_fraction: Fraction of each class's patients put in ``test`` (binary only).
        overwrite: Replace an existing non-empty dataset root instead of failing.

    Returns:
        One row per image with columns ``path``, ``label``, ``patient_id``, ``split``,
        ``lesion_mask``, ``lung_mask`` (paths relative to ``out_dir``, posix) and
        ``lesion_fraction``.

    Raises:
        ValueError: On invalid arguments (the message names the parameter).
        FileExistsError: If the dataset root exists, is not empty and ``overwrite`` is False.
    """
    _check(task, image_size, difficulty)
    counts, (lo, hi) = _check_counts(task, n_patients, images_per_patient, test_fraction, seed)
    out_dir = Path(out_dir)
    root = out_dir / DATASET_ROOTS[task]
    if root.exists() and any(root.iterdir()):
        if not overwrite:
            raise FileExistsError(f"{root} exists and is not empty; pass overwrite=True to remove "
                                  "and regenerate it")
        shutil.rmtree(root)
    root.mkdir(parents=True, exist_ok=True)

    def save(arr, path: Path) -> str:
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(arr).save(path, format="PNG")  # 2-D uint8 -> mode "L"
        return path.relative_to(out_dir).as_posix()

    rows, pno = [], 0
    for ci, label in enumerate(CLASSES[task]):
        n = counts[label]
        test = set()
        if task == "binary" and test_fraction > 0 and n >= 2:
            n_test = min(n - 1, max(1, int(round(test_fraction * n))))
            test = set(np.random.default_rng([seed, 0x5EED, ci, 1]).permutation(n)[:n_test].tolist())
        for j in range(n):
            pno += 1
            pid = f"synpat{pno:04d}"
            prng = np.random.default_rng(np.random.SeedSequence([seed, pno, 0]))
            anatomy = sample_anatomy(prng, difficulty)
            for k in range(1, int(prng.integers(lo, hi + 1)) + 1):
                rng = np.random.default_rng(np.random.SeedSequence([seed, pno, k]))
                img, lesion, lung = make_image(label, task, rng, image_size, difficulty, anatomy=anatomy)
                if task == "binary":
                    split = "test" if j in test else "train"
                    rel = Path(split, label, f"{pid}_{k}.png")
                    lung_rel = save(lung.astype(np.uint8) * 255, root / "lung_masks" / rel)
                else:
                    split, name = "", f"{label}-{pid}_{k}.png"
                    rel = Path(label, "images", name)
                    lung_rel = save(lung.astype(np.uint8) * 255, root / label / "masks" / name)
                rows.append({
                    "path": save(img, root / rel), "label": label, "patient_id": pid, "split": split,
                    "lesion_mask": save(lesion.astype(np.uint8) * 255, root / "lesion_masks" / rel),
                    "lung_mask": lung_rel, "lesion_fraction": float(lesion.mean())})
    (root / "SYNTHETIC_README.txt").write_text(
        "SYNTHETIC DATA - NOT MEDICAL DATA.\n"
        "Procedurally drawn chest-X-ray-like images generated by xraylib.synthetic.generate\n"
        f"with task={task!r}, n_patients={counts}, images_per_patient=({lo}, {hi}), "
        f"image_size={image_size}, difficulty={difficulty}, seed={seed}, test_fraction={test_fraction}.\n"
        "They carry no clinical information; do not use them for medical purposes.\n"
        "Lesion masks (0/255) are under lesion_masks/ mirroring the image paths; lung masks are under\n"
        "lung_masks/ (binary layout) or <Class>/masks/ (COVID-19 Radiography layout).\n")
    return pd.DataFrame(rows, columns=["path", "label", "patient_id", "split", "lesion_mask",
                                       "lung_mask", "lesion_fraction"])


EXTERNAL_ROOT = "chest_xray_external"
EXTERNAL_SEED_OFFSET = 7919  # the external set's generator seed is seed + this: new patients, same recipe


def acquisition_shift(img: np.ndarray, gamma: float, frame: float) -> np.ndarray:
    """Another machine's look: intensities raised to ``gamma`` (< 1 brighter) and a black collimation frame.

    ``frame`` is the fraction of each side painted black (0 = none).
    """
    if gamma <= 0 or not 0 <= frame < 0.5:
        raise ValueError(f"need gamma > 0 and 0 <= frame < 0.5, got gamma={gamma!r}, frame={frame!r}")
    out = 255.0 * (np.asarray(img, dtype=np.float64) / 255.0) ** gamma
    h, w = out.shape
    bh, bw = int(round(h * frame)), int(round(w * frame))
    if bh:
        out[:bh], out[h - bh:] = 0, 0
    if bw:
        out[:, :bw], out[:, w - bw:] = 0, 0
    return np.clip(np.round(out), 0, 255).astype(np.uint8)


def generate_external(out_dir, *, n_patients: int, image_size: int, difficulty: float, seed: int,
                      gamma: float, frame: float) -> pd.DataFrame:
    """A binary "second site" for external validation of the demo study (NOT medical data).

    New patients (drawn with a seed derived from ``seed``, so no image repeats the main set's) with
    the same findings, seen through :func:`acquisition_shift`; written class-per-folder to
    ``out_dir/chest_xray_external/{NORMAL,PNEUMONIA}/`` (replaced if present), the layout that
    ``data.external`` reads. Returns one row per image (``path`` relative to ``out_dir``, ``label``,
    ``patient_id``).
    """
    import tempfile

    root = Path(out_dir) / EXTERNAL_ROOT
    if root.exists():
        shutil.rmtree(root)
    rows = []
    with tempfile.TemporaryDirectory(prefix="xraylib_external_") as tmp:
        frame_ = generate(tmp, "binary", n_patients=n_patients, image_size=image_size, difficulty=difficulty,
                          seed=int(seed) + EXTERNAL_SEED_OFFSET, test_fraction=0.0)
        for row in frame_.itertuples():
            with Image.open(Path(tmp) / row.path) as img:
                shifted = acquisition_shift(np.asarray(img), gamma, frame)
            target = root / row.label / Path(row.path).name
            target.parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(shifted).save(target, format="PNG")
            rows.append({"path": target.relative_to(out_dir).as_posix(), "label": row.label,
                         "patient_id": row.patient_id})
    (root / "SYNTHETIC_README.txt").write_text(
        "SYNTHETIC DATA - NOT MEDICAL DATA.\n"
        "A second 'site' for external validation of the demo study: new synthetic patients "
        f"(seed {int(seed) + EXTERNAL_SEED_OFFSET}, {n_patients} per class) through an acquisition shift "
        f"(gamma {gamma}, black frame {frame} of each side). xraylib.synthetic.generate_external.\n")
    return pd.DataFrame(rows, columns=["path", "label", "patient_id"])
