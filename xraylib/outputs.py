"""Writers of every JSON and CSV the study produces: one format, one place, an output folder to choose.

* :func:`write_json` - indented JSON; numpy values converted, NaN/inf as ``null``
  (:func:`to_json_safe`), floats optionally rounded;
* :func:`write_metrics` - ``<folder>/<name>.json`` with floats rounded to 6 digits
  (default folder ``reports/metrics``);
* :func:`write_table` - a DataFrame as CSV (no index; floats as ``%.6g`` where asked);
* :func:`write_plot_data` - curve data for ``dvc plots`` as ``<folder>/<name>.csv``
  (default folder ``reports/plots``).

Each creates the folder it writes into and returns the path written. Figures are
:func:`xraylib.plots.save_figure`.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pandas as pd

from xraylib import config

METRIC_DIGITS = 6


def to_json_safe(value, digits: int | None = METRIC_DIGITS):
    """Plain-Python copy of ``value`` for JSON: numpy scalars and arrays converted, NaN/inf as ``None``,
    floats rounded to ``digits`` (``None`` keeps full precision)."""
    if isinstance(value, dict):
        return {str(k): to_json_safe(v, digits) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [to_json_safe(v, digits) for v in value]
    if isinstance(value, np.ndarray):
        return to_json_safe(value.tolist(), digits)
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float):
        if math.isnan(value) or math.isinf(value):
            return None
        return value if digits is None else round(value, digits)
    return value


def write_json(data: dict, path: str | Path, digits: int | None = None, *, sort_keys: bool = False) -> Path:
    """Write ``data`` as indented JSON at ``path`` (see :func:`to_json_safe`), creating the folder."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(to_json_safe(data, digits), indent=2, sort_keys=sort_keys) + "\n")
    return path


def write_metrics(data: dict, name: str, folder: str | Path | None = None) -> Path:
    """Write ``<folder>/<name>.json`` (default ``reports/metrics``; floats rounded to 6 digits, NaN as null)."""
    folder = config.METRICS_DIR if folder is None else config.resolve(folder)
    return write_json(data, folder / f"{name}.json", digits=METRIC_DIGITS)


def write_table(frame: pd.DataFrame, path: str | Path, *, float_format: str | None = None) -> Path:
    """Write ``frame`` as CSV without its index at ``path``, creating the folder."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    frame.to_csv(path, index=False, float_format=float_format)
    return path


def write_plot_data(frame: pd.DataFrame, name: str, folder: str | Path | None = None) -> Path:
    """Write curve data for ``dvc plots`` as ``<folder>/<name>.csv`` (default ``reports/plots``; ``%.6g``)."""
    folder = config.PLOTS_DIR if folder is None else config.resolve(folder)
    return write_table(frame, folder / f"{name}.csv", float_format="%.6g")
