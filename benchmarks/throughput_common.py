"""What the throughput benchmarks share (``throughput_torch.py``, ``throughput_tf.py``); imports no framework.

Each benchmark runs every variant in a fresh interpreter (:func:`run_child`: the script itself with ``_child SPEC``),
which prints its result as one JSON line after :data:`RESULT_MARK`; the parent collects the rows and appends them to
a CSV (:func:`append_csv`) with the ratios.
"""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Callable

import numpy as np
import pandas as pd

from xraylib import config, numerics

RESULT_MARK = "THROUGHPUT_RESULT "
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")


def subset_manifest(root: str | Path, n_train: int, n_val: int, seed: int) -> pd.DataFrame:
    """A seeded image-level train/val subset of a class-per-folder root, as a manifest.

    Columns ``path`` (absolute), ``label`` (folder name), ``patient_id`` (file stem), ``split`` and ``sha256``
    (left empty: only resuming reads it, and the benchmarks never resume).

    Raises:
        ValueError: fewer images under ``root`` than ``n_train + n_val``.
    """
    root = config.resolve(root)
    files = [(str(path), folder.name) for folder in sorted(p for p in root.iterdir() if p.is_dir())
             for path in sorted(folder.iterdir()) if path.suffix.lower() in IMAGE_SUFFIXES]
    if len(files) < n_train + n_val:
        raise ValueError(f"{root} has {len(files)} images, fewer than --images {n_train} + --val-images {n_val}")
    order = np.random.default_rng(seed).permutation(len(files))[:n_train + n_val]
    rows = [{"path": files[i][0], "label": files[i][1], "patient_id": Path(files[i][0]).stem,
             "split": "train" if k < n_train else "val", "sha256": ""} for k, i in enumerate(order)]
    return pd.DataFrame(rows).sort_values(["split", "path"], ignore_index=True)


def run_child(script: str | Path, spec: dict, timeout: float, label: str) -> dict:
    """Run one measurement of ``script`` in a fresh interpreter; its result, or ``{"status": "failed: ..."}``.

    ``$XRAYLIB_NUM_THREADS`` is removed from the child's environment, so the thread counts are those asked for.
    """
    env = {k: v for k, v in os.environ.items() if k != numerics.THREADS_ENV}
    print(f"  measuring {label} ...", flush=True)
    try:
        done = subprocess.run([sys.executable, str(Path(script).resolve()), "_child", json.dumps(spec)],
                              capture_output=True, text=True, timeout=timeout, env=env, cwd=config.project_root())
    except subprocess.TimeoutExpired:
        return {"status": f"failed: timed out after {timeout:.0f} s"}
    found = [line for line in done.stdout.splitlines() if line.startswith(RESULT_MARK)]
    if done.returncode or not found:
        lines = [line for line in done.stderr.strip().splitlines() if line.strip()] or ["no output"]
        return {"status": f"failed: {lines[-1][:300]}"}
    return json.loads(found[-1][len(RESULT_MARK):])


def interleaved(specs: dict, repeats: int, measure: Callable[[dict], dict]) -> list[dict]:
    """Measure every variant ``repeats`` times, interleaved: repeat 1 runs ``specs`` in order, repeat 2 in reverse
    order, and so on, so a slow drift of a shared machine (its epoch times swing by 2x between runs) falls on every
    variant alike and each repeat's ratios compare neighbours in time. One ``{key: result}`` per repeat.
    """
    if repeats < 1:
        raise ValueError(f"--repeats must be >= 1, got {repeats}")
    done = []
    for k in range(repeats):
        keys = list(specs) if k % 2 == 0 else list(reversed(list(specs)))
        if repeats > 1:
            print(f"repeat {k + 1} of {repeats}", flush=True)
        done.append({key: measure(specs[key]) for key in keys})
    return done


def spread(rows: list[dict], by: list[str], columns: list[str]) -> pd.DataFrame:
    """Median and range over the repeats: one row per ``by`` group, ``<column>`` as ``median [min, max]``."""
    frame = pd.DataFrame(rows)
    table = []
    for key, group in frame.groupby(by, sort=False):
        row = dict(zip(by, key if isinstance(key, tuple) else (key,)))
        for column in columns:
            values = pd.to_numeric(group[column], errors="coerce").dropna()
            row[column] = (f"{values.median():.3g} [{values.min():.3g}, {values.max():.3g}]" if len(values) > 1
                           else f"{values.iloc[0]:.3g}" if len(values) else "n/a")
        row["repeats"] = len(group)
        table.append(row)
    return pd.DataFrame(table)


def append_csv(path: str | Path, rows: list[dict]) -> Path:
    """Append ``rows`` to a CSV (header written when new).

    Raises:
        ValueError: the file exists with other columns (use another ``--out``).
    """
    path = config.user_path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fields = list(rows[0])
    if path.is_file() and path.stat().st_size:
        with path.open(newline="") as handle:
            header = next(csv.reader(handle), [])
        if header != fields:
            raise ValueError(f"{path} has columns {header}, not {fields}; write to another --out")
    with path.open("a", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=fields)
        if handle.tell() == 0:
            writer.writeheader()
        writer.writerows(rows)
    return path


def ratio(a, b) -> float | str:
    """``a / b`` rounded, or ``"n/a"`` when either figure is missing."""
    return round(a / b, 3) if isinstance(a, (int, float)) and isinstance(b, (int, float)) and b else "n/a"


def figure(result: dict, key: str = "images_per_s", digits: int = 1):
    """A result's figure rounded, or its failure status."""
    return round(result[key], digits) if key in result else result.get("status", "failed")


def finish(rows: list[dict], out: str, shown: list[str], by: list[str] | None = None,
           summarised: list[str] | None = None) -> None:
    """Print the table of ``rows`` (columns ``shown``), then, over repeats, the median and range of ``summarised``
    per ``by`` group; append all columns to ``out``."""
    frame = pd.DataFrame(rows)
    print()
    print(frame[shown].to_string(index=False))
    if by and summarised and frame.duplicated(by).any():  # some group was measured more than once
        print("\nmedian [min, max] over the repeats:")
        print(spread(rows, by, summarised).to_string(index=False))
    print(f"\nappended {len(rows)} row(s) to {append_csv(out, rows)}")


def main(argv: list[str] | None, parser, measures: dict, parts: dict) -> int:
    """A benchmark's command line: ``_child SPEC`` measures one variant (``measures[spec["kind"]]``) and prints its
    result after :data:`RESULT_MARK`; otherwise ``parts[args.part]`` runs a comparison in children."""
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["_child"]:
        spec = json.loads(argv[1])
        print(RESULT_MARK + json.dumps(measures[spec["kind"]](spec)), flush=True)
        return 0
    args = parser.parse_args(argv)
    parts[args.part](args)
    return 0
