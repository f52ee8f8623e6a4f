"""Spread of the default binary (Keras) demo under other numeric paths and seeds.

Each numeric path runs in its own process, because TensorFlow reads
``TF_ENABLE_ONEDNN_OPTS`` and ``TF_NUM_INTRAOP_THREADS`` when it starts. A path is
written ``o<0|1>t<threads>s<seed>`` (oneDNN off/on, intra-op threads, seed). The
recipe is ``params.yaml``'s ``train_binary`` section plus ``--set key=value``
overrides; synthetic data can be regenerated at another size or difficulty.
Selection uses the validation figures; test figures are printed beside them.

Usage::

    python benchmarks/default_recipe_binary.py --variant base --paths o1t2s42 o0t1s42 o1t2s43
    python benchmarks/default_recipe_binary.py --variant lr1e-3 --set learning_rate=0.001 ...

One JSON line per (variant, path) is appended to ``<out>/results.jsonl``.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import yaml

from xraylib import config, data, synthetic


def prepare(out: Path, difficulty: float, patients_scale: float, seed: int) -> Path:
    """Synthetic binary data (cached per difficulty and size) and its patient-level manifest."""
    tag = f"d{difficulty}_x{patients_scale}"
    manifest_dir = out / f"data_{tag}" / "processed"
    if (manifest_dir / "manifest.csv").is_file():
        return manifest_dir
    raw = out / f"data_{tag}" / "raw"
    counts = {k: int(round(v * patients_scale)) for k, v in synthetic.DEFAULT_N_PATIENTS["binary"].items()}
    synthetic.generate(raw, "binary", n_patients=counts, image_size=128, difficulty=difficulty, seed=seed,
                       overwrite=True)
    params = config.load_params()["data"]
    params = {**params, "binary": {**params["binary"], "source": "synthetic", "root": str(raw / "chest_xray")}}
    data.build_manifest("binary", params, seed, out_dir=manifest_dir, progress=False)
    return manifest_dir


def run_one(manifest_dir: Path, overrides: dict, seed: int) -> dict:
    """Train and evaluate once in this process (TensorFlow imported here only)."""
    from xraylib import metrics, tf_data, tf_model, tf_train

    tf_model.SMALL_CNN_NORM = overrides.pop("small_cnn_norm", tf_model.SMALL_CNN_NORM)

    params = config.load_params()
    cfg = tf_train.TrainConfig.from_params(params["train_binary"], **{**overrides, "seed": seed})
    manifest = data.load_manifest("binary", manifest_dir)
    names = data.class_names(manifest)
    datasets = tf_data.split_datasets(manifest, names, image_size=cfg.image_size, resize_mode="stretch",
                                      equalize_method="none", batch_size=cfg.batch_size, seed=seed)
    start = time.perf_counter()
    import contextlib
    import io

    with contextlib.redirect_stdout(io.StringIO()):  # the per-epoch lines
        result = tf_train.train_binary(cfg, datasets)
    seconds = time.perf_counter() - start
    threshold = metrics.youden_threshold(datasets["val"]["labels"], result.val_probs)
    test_probs = tf_train.predict_proba(result.model, datasets["test"]["dataset"], cfg.tta)
    val = metrics.binary_metrics(datasets["val"]["labels"], result.val_probs, threshold)
    test = metrics.binary_metrics(datasets["test"]["labels"], test_probs, threshold)
    import sklearn.metrics as skm

    return {"seconds": round(seconds, 1), "epochs_run": int(len(result.history)), "threshold": round(threshold, 4),
            "val_auc": round(skm.roc_auc_score(datasets["val"]["labels"], result.val_probs), 4),
            "val_accuracy": round(val["accuracy"], 4),
            "test_auc": round(skm.roc_auc_score(datasets["test"]["labels"], test_probs), 4),
            "test_accuracy": round(test["accuracy"], 4), "test_sensitivity": round(test["sensitivity"], 4),
            "test_specificity": round(test["specificity"], 4), "n_val": len(result.val_probs),
            "n_test": len(test_probs)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--variant", required=True)
    parser.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE", help="train_binary overrides")
    parser.add_argument("--difficulty", type=float, default=0.5)
    parser.add_argument("--patients-scale", type=float, default=1.0, help="x the default synthetic patient counts")
    parser.add_argument("--paths", nargs="+", default=["o1t2s42", "o0t1s42"])
    parser.add_argument("--out", default="build/recipe_binary")
    parser.add_argument("--one", help=argparse.SUPPRESS)  # internal: run one path in this process
    args = parser.parse_args(argv)
    out = config.user_path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    overrides = {k: yaml.safe_load(v) for k, v in (item.split("=", 1) for item in args.set)}
    seed_default = int(config.load_params()["seed"])
    manifest_dir = prepare(out, args.difficulty, args.patients_scale, seed_default)
    if args.one:
        seed = int(re.fullmatch(r"o[01]t\d+s(\d+)", args.one).group(1))
        print("RESULT " + json.dumps(run_one(manifest_dir, overrides, seed)), flush=True)
        return 0
    for path in args.paths:
        onednn, threads, seed = re.fullmatch(r"o([01])t(\d+)s(\d+)", path).groups()
        env = {**os.environ, "TF_ENABLE_ONEDNN_OPTS": onednn, "TF_NUM_INTRAOP_THREADS": threads,
               "TF_NUM_INTEROP_THREADS": "1", "TF_CPP_MIN_LOG_LEVEL": "2", "PYTHONHASHSEED": "0"}
        done = subprocess.run([sys.executable, __file__, *(argv or sys.argv[1:]), "--one", path], env=env,
                              capture_output=True, text=True)
        lines = [line for line in done.stdout.splitlines() if line.startswith("RESULT ")]
        if done.returncode or not lines:
            print(f"{path}: failed\n{done.stderr[-3000:]}", file=sys.stderr)
            continue
        row = {"variant": args.variant, "path": path, "difficulty": args.difficulty,
               "patients_scale": args.patients_scale, "set": overrides, **json.loads(lines[-1][7:])}
        print(json.dumps(row), flush=True)
        with (out / "results.jsonl").open("a") as fh:
            fh.write(json.dumps(row) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
