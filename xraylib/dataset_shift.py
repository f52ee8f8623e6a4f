"""How two image sets differ: acquisition statistics, their separability, and intensity histograms.

Used by notebook 03 to ask why a model trained on one hospital's images fails on another's
before anything is changed. Each image is described by a few numbers a radiographer would
recognise (brightness, contrast, the intensity percentiles, how dark the border is compared
with the centre, how much of the image is black or burnt out, its original size); sets are
compared per class by median and interquartile range, with the two-sample Kolmogorov-Smirnov
test (scipy) per statistic, and summarised by how well a cross-validated logistic regression
(scikit-learn) tells the sets apart from these statistics alone (ROC-AUC 0.5 = indistinguishable).

Framework-free (numpy, PIL, scipy, scikit-learn).
"""

from __future__ import annotations

from typing import Mapping, Sequence

import numpy as np
import pandas as pd

from xraylib import config, images

STATISTICS = ("mean", "std", "p05", "p50", "p95", "border_mean", "centre_mean", "border_centre_ratio",
              "dark_fraction", "bright_fraction", "height", "width")
BORDER = 0.1  # the outer 10 % of each side is the border; the central 50 % square is the centre
DARK, BRIGHT = 16, 240  # 8-bit levels below / above which a pixel counts as black / burnt out


def describe(gray: np.ndarray) -> dict:
    """The :data:`STATISTICS` of one 8-bit grey image (any size)."""
    gray = np.asarray(gray)
    if gray.ndim != 2 or gray.size == 0:
        raise ValueError(f"expected a 2-D grey image, got shape {gray.shape}")
    x = gray.astype(np.float64)
    h, w = x.shape
    bh, bw = max(1, int(round(h * BORDER))), max(1, int(round(w * BORDER)))
    ring = np.ones_like(x, dtype=bool)
    ring[bh:h - bh, bw:w - bw] = False
    centre = x[h // 4:h - h // 4 or None, w // 4:w - w // 4 or None]
    p05, p50, p95 = np.percentile(x, [5, 50, 95])
    border_mean, centre_mean = float(x[ring].mean()), float(centre.mean())
    return {"mean": float(x.mean()), "std": float(x.std()), "p05": float(p05), "p50": float(p50), "p95": float(p95),
            "border_mean": border_mean, "centre_mean": centre_mean,
            "border_centre_ratio": border_mean / centre_mean if centre_mean > 0 else float("nan"),
            "dark_fraction": float((gray < DARK).mean()), "bright_fraction": float((gray >= BRIGHT).mean()),
            "height": int(h), "width": int(w)}


def image_statistics(frame: pd.DataFrame, set_name: str) -> pd.DataFrame:
    """One row of :data:`STATISTICS` per image of ``frame`` (columns ``path``, ``label``), tagged ``set``.

    Images are read as stored (:func:`xraylib.images.load_gray`), before any resizing.
    """
    rows = [{"set": set_name, "path": path, "label": label, **describe(images.load_gray(config.resolve(path)))}
            for path, label in zip(frame["path"], frame["label"])]
    return pd.DataFrame(rows, columns=["set", "path", "label", *STATISTICS])


def compare(stats: pd.DataFrame, reference: str, statistics: Sequence[str] = STATISTICS) -> pd.DataFrame:
    """Per class and statistic: median [IQR] in each set, and the KS test of every other set against ``reference``.

    Returns one row per (label, statistic): ``<set> median``, ``<set> IQR`` for each set, then for each
    other set its KS statistic and p-value against the reference set's images of the same class.
    """
    from scipy.stats import ks_2samp

    if reference not in set(stats["set"]):
        raise ValueError(f"reference set {reference!r} not among {sorted(set(stats['set']))}")
    sets = [reference, *sorted(set(stats["set"]) - {reference})]
    rows = []
    for label, part in stats.groupby("label", sort=True):
        for stat in statistics:
            row = {"label": label, "statistic": stat}
            by_set = {s: part.loc[part["set"] == s, stat].dropna().to_numpy(float) for s in sets}
            for s, values in by_set.items():
                q1, med, q3 = np.percentile(values, [25, 50, 75]) if len(values) else (np.nan,) * 3
                row[f"{s} median"], row[f"{s} IQR"] = med, q3 - q1
            for s in sets[1:]:
                a, b = by_set[reference], by_set[s]
                test = ks_2samp(a, b) if len(a) and len(b) and np.ptp(np.r_[a, b]) > 0 else None
                row[f"{s} KS"] = test.statistic if test else 0.0
                row[f"{s} p"] = test.pvalue if test else 1.0
            rows.append(row)
    return pd.DataFrame(rows)


def separability(stats: pd.DataFrame, a: str, b: str, statistics: Sequence[str] = STATISTICS, folds: int = 5,
                 seed: int = 0) -> dict:
    """How well the image statistics alone tell set ``a`` from set ``b``: cross-validated ROC-AUC per class and overall.

    A logistic regression on the standardised statistics (scikit-learn, stratified ``folds``-fold
    cross-validation). 0.5: the sets look alike by these measures; near 1: a model can tell the
    site from simple intensity figures, so it can also learn site instead of disease.
    Statistics constant in both sets are dropped (sizes, when every image has the same).
    """
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import StratifiedKFold, cross_val_predict
    from sklearn.metrics import roc_auc_score
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    result = {}
    for label in [None, *sorted(set(stats["label"]))]:
        part = stats[stats["set"].isin([a, b]) & ((stats["label"] == label) if label is not None else True)]
        used = [s for s in statistics if part[s].nunique(dropna=True) > 1]
        target = (part["set"] == b).to_numpy(int)
        n_min = int(min(target.sum(), len(target) - target.sum()))
        if not used or n_min < 2:
            result["all" if label is None else label] = float("nan")
            continue
        features = part[used].fillna(part[used].median()).to_numpy(float)
        model = make_pipeline(StandardScaler(), LogisticRegression(max_iter=1000))
        cv = StratifiedKFold(n_splits=min(folds, n_min), shuffle=True, random_state=seed)
        scores = cross_val_predict(model, features, target, cv=cv, method="predict_proba")[:, 1]
        result["all" if label is None else label] = float(roc_auc_score(target, scores))
    return result


def intensity_histograms(stats_frames: Mapping[str, pd.DataFrame], size: int | None = None,
                         bins: int = 32) -> pd.DataFrame:
    """Mean normalised 8-bit intensity histogram per (set, label); long format for plotting.

    ``stats_frames`` maps a set name to a frame with ``path`` and ``label``; ``size`` resizes
    (stretch) before counting so sets of different resolution weigh pixels alike.
    """
    edges = np.linspace(0, 256, bins + 1)
    rows = []
    for set_name, frame in stats_frames.items():
        for label, part in frame.groupby("label", sort=True):
            hist = np.zeros(bins)
            for path in part["path"]:
                gray = images.load_gray(config.resolve(path))
                if size:
                    gray = images.resize(gray, size, "stretch")
                counts, _ = np.histogram(gray, bins=edges)
                hist += counts / counts.sum()
            hist /= max(len(part), 1)
            rows += [{"set": set_name, "label": label, "intensity": float(lo), "fraction": float(f)}
                     for lo, f in zip(edges[:-1], hist)]
    return pd.DataFrame(rows, columns=["set", "label", "intensity", "fraction"])
