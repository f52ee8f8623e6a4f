"""What helps the binary Keras model generalise? A CPU benchmark on the real Kermany images.

Internal test accuracy on Kermany's training folder is optimistic: models that
reach ROC-AUC 0.99 on a patient-level split of it lose a lot on other patients
(the Kaggle test split: ~82 % accuracy, ~55 % specificity for public models).
This script compares, on one patient-level split and a fixed subset, and ranks the
variants on the validation split and on the external development set (half of the
official Kaggle test split, by patient: ``../shared/data/kermany224_external_dev``)
-- **never on a test split**: the internal test split is not even loaded, so no
choice made from this table can leak test information into a profile:

* preprocessing: ``equalize`` none / hist / clahe, and ``input_norm``
  standardize_backbone (per-image z-score then the backbone's range) vs backbone
  (the plain Keras ``preprocess_input``, no per-image standardisation);
* heads on the frozen backbone: plain, label smoothing 0.1, L2; fine-tuning
  the top block (Xception block 14);
* test-time augmentation (mean over image and mirror image).

Besides the clean validation split, every model is scored on the same validation
images under acquisition-like intensity shifts applied BEFORE equalisation
(gamma 0.6 = brighter soft tissue, gamma 1.6 = darker, contrast x0.6), a proxy
for other machines and exposure settings, and on the 16 original-resolution
Kaggle validation images when available. The threshold is always Youden's J on
the (clean) validation split, as in notebook 03.

Frozen activations are computed once per preprocessing variant (cut at
``block14_sepconv1``); heads and fine-tuning then train on the cache.

Usage (about 20 minutes on 2 otherwise idle CPU cores with the defaults: 3 variants x 3 heads;
``--variants`` / ``--heads`` name all of them for the full grid, about 40 minutes)::

    python benchmarks/binary_generalisation.py --out reports/benchmarks/binary_generalisation.csv
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import sys
import tempfile
import time

import numpy as np
import pandas as pd

from xraylib import config, data, images, metrics

VARIANTS = {  # name: (equalize, input_norm)
    "none_std": ("none", "standardize_backbone"),
    "hist_std": ("hist", "standardize_backbone"),
    "clahe_std": ("clahe", "standardize_backbone"),
    "none_plain": ("none", "backbone"),
}
HEADS = {  # name: TrainConfig overrides
    "head": {},
    "head_ls0.1": {"label_smoothing": 0.1},
    "head_l2": {"l2": 0.01},
    "finetune_b14": {"fine_tune_epochs": 4},
    "finetune_b14_ls0.1": {"fine_tune_epochs": 4, "label_smoothing": 0.1},
}
SHIFTS = {
    "gamma0.6": lambda x: 255.0 * (x / 255.0) ** 0.6,
    "gamma1.6": lambda x: 255.0 * (x / 255.0) ** 1.6,
    "contrast0.6": lambda x: x.mean() + 0.6 * (x - x.mean()),
}


def prepared(paths, size: int, equalize: str, shift=None) -> np.ndarray:
    """Images as in training (stretch resize, equalise), optionally intensity-shifted before equalisation."""
    out = []
    for p in paths:
        gray = images.resize(images.load_gray(config.resolve(p)), size, "stretch").astype(np.float64)
        if shift is not None:
            gray = shift(gray)
        out.append(images.equalize(np.clip(np.round(gray), 0, 255).astype(np.uint8), equalize))
    return np.stack(out)[..., None].astype(np.float32)


def kermany_manifest(root, seed: int) -> pd.DataFrame:
    """The study's patient-level manifest of the Kermany folder ``root`` (params.yaml's split settings)."""
    data_params = config.load_params()["data"]
    data_params = {**data_params, "binary": {**data_params["binary"], "source": "kermany", "root": str(root)}}
    with tempfile.TemporaryDirectory() as tmp:
        data.build_manifest("binary", data_params, seed, out_dir=tmp, progress=False)
        return data.load_manifest("binary", tmp)


def subset(frame: pd.DataFrame, n: int, seed: int) -> pd.DataFrame:
    """At most ``n`` rows, stratified by label, manifest order kept."""
    if n <= 0 or len(frame) <= n:
        return frame
    parts = [g.sample(frac=n / len(frame), random_state=seed) for _, g in frame.groupby("label")]
    return pd.concat(parts).sort_index()


def rates(y, p, t) -> dict:
    m = metrics.binary_metrics(y, p, t)
    return {"sensitivity": m["sensitivity"], "specificity": m["specificity"], "accuracy": m["accuracy"]}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default="../shared/data/kermany224",
                        help="Kermany folder with train/{NORMAL,PNEUMONIA}")
    parser.add_argument("--weights", default="../shared/weights/xception_notop_imagenet.weights.h5")
    parser.add_argument("--image-size", type=int, default=128)
    parser.add_argument("--max-train", type=int, default=1000, help="training images (stratified subset)")
    parser.add_argument("--max-val", type=int, default=300)
    parser.add_argument("--external", default=None,
                        help="external development set (class folders); default ../shared/data/kermany224_external_dev")
    parser.add_argument("--variants", default="none_std,hist_std,none_plain", help=f"comma list of {list(VARIANTS)}")
    parser.add_argument("--heads", default="head,head_ls0.1,finetune_b14", help=f"comma list of {list(HEADS)}")
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--out", default="reports/benchmarks/binary_generalisation.csv")
    args = parser.parse_args(argv)

    root, weights = config.resolve(args.data), config.resolve(args.weights)
    if not root.is_dir() or not weights.is_file():
        print(f"benchmark needs the real data {root} and weights {weights} (../shared on development machines)",
              file=sys.stderr)
        return 2
    from xraylib import tf_model, tf_train  # TensorFlow only from here on

    started = time.time()
    params = config.load_params()
    manifest = kermany_manifest(root, args.seed)
    classes = data.class_names(manifest)
    frames = {s: subset(manifest[manifest["split"] == s], n, args.seed)
              for s, n in (("train", args.max_train), ("val", args.max_val))}  # the test split is never used here
    external = config.resolve(args.external) if args.external else config.shared_path("data", "kermany224_external_dev")
    if external and external.is_dir():
        ext_paths = sorted(str(p) for p in external.rglob("*") if p.suffix.lower() in (".jpeg", ".jpg", ".png"))
        frames["ext"] = pd.DataFrame({"path": ext_paths,
                                      "label": ["PNEUMONIA" if "PNEUMONIA" in p else "NORMAL" for p in ext_paths]})
    labels = {s: np.array([classes.index(v) for v in f["label"]]) for s, f in frames.items()}
    original = config.shared_path("data", "kermany_val_original")
    orig_paths = sorted(str(p) for p in original.rglob("*.jpeg")) if original else []
    orig_y = np.array([int("PNEUMONIA" in p) for p in orig_paths])
    print(f"subset: train {len(labels['train'])}, val {len(labels['val'])}, external dev {len(labels.get('ext', []))} "
          f"images; "
          f"{args.image_size} px; original val images: {len(orig_paths)}", flush=True)

    rows = []
    size = args.image_size
    for variant in args.variants.split(","):
        equalize, norm = VARIANTS[variant]
        t0 = time.time()
        tf_train.set_determinism(args.seed)
        model = tf_model.build_model("xception", size, str(weights), input_norm=norm,
                                     dropout=params["train_binary"]["dropout"], l2=params["train_binary"]["l2"],
                                     augment=None, seed=args.seed)
        lower, _ = tf_model.split_at(model, "block14_sepconv1")
        run = lambda x: lower.predict(x, batch_size=32, verbose=0).astype(np.float16)  # noqa: E731
        sets = {s: prepared(f["path"], size, equalize) for s, f in frames.items()}
        cache = {s: run(x) for s, x in sets.items()}
        cache.update({f"{s}_flip": run(sets[s][:, :, ::-1]) for s in sets if s != "train"})
        for shift, fn in SHIFTS.items():
            cache[f"val_{shift}"] = run(prepared(frames["val"]["path"], size, equalize, fn))
        if orig_paths:
            x = prepared(orig_paths, size, equalize)
            cache["orig"], cache["orig_flip"] = run(x), run(x[:, :, ::-1])
        extract_s = time.time() - t0
        print(f"[{variant}] cached activations in {extract_s:.0f} s", flush=True)
        for head in args.heads.split(","):
            t1 = time.time()
            cfg = tf_train.TrainConfig.from_params(
                params["train_binary"], backbone="xception", weights=str(weights), image_size=size, input_norm=norm,
                epochs=30, learning_rate=0.001, early_stopping_patience=5, seed=args.seed, **HEADS[head])
            tf_train.set_determinism(args.seed)
            model = tf_model.build_model("xception", size, str(weights), input_norm=norm, dropout=cfg.dropout,
                                         l2=cfg.l2, augment=None, seed=args.seed)
            _, upper = tf_model.split_at(model, "block14_sepconv1")
            x_train, x_val = cache["train"], cache["val"]
            if not cfg.fine_tune_epochs:  # head only: train on pooled features
                import keras

                pool = keras.Model(model.get_layer("block14_sepconv1").input, model.get_layer("head_pool").output)
                x_train, x_val = (pool.predict(a, batch_size=64, verbose=0) for a in (x_train, x_val))
            with contextlib.redirect_stdout(io.StringIO()):
                history, _, _ = tf_train.train_on_cached(model, cfg, x_train, labels["train"], [x_val], labels["val"])
            predict = {k: upper.predict(v, batch_size=64, verbose=0)[:, 0].astype(float) for k, v in cache.items()
                       if k != "train"}
            for tta in ("none", "flip"):
                view = (lambda k: (predict[k] + predict[f"{k}_flip"]) / 2) if tta == "flip" else predict.get
                threshold = metrics.youden_threshold(labels["val"], view("val"))
                row = {"variant": variant, "equalize": equalize, "input_norm": norm, "head": head, "tta": tta,
                       "epochs": len(history), "threshold": threshold,
                       "val_auc": metrics.binary_report(labels["val"], view("val"), {}, 1)["roc_auc"]}
                if "ext" in labels:
                    row["ext_auc"] = metrics.binary_report(labels["ext"], view("ext"), {}, 1)["roc_auc"]
                    row.update({f"ext_{k}": v for k, v in rates(labels["ext"], view("ext"), threshold).items()})
                for shift in SHIFTS:
                    p = predict[f"val_{shift}"]
                    row[f"{shift}_auc"] = metrics.binary_report(labels["val"], p, {}, 1)["roc_auc"]
                    row[f"{shift}_specificity"] = rates(labels["val"], p, threshold)["specificity"]
                if orig_paths:
                    p = view("orig")
                    row["orig16_auc"] = metrics.binary_report(orig_y, p, {}, 1)["roc_auc"]
                    row.update({f"orig16_{k}": v for k, v in rates(orig_y, p, threshold).items() if k != "accuracy"})
                row["train_s"] = round(time.time() - t1, 1)
                rows.append(row)
            print(json.dumps({k: (round(v, 3) if isinstance(v, float) else v) for k, v in rows[-2].items()}),
                  flush=True)
    table = pd.DataFrame(rows)
    rank_by = "ext_auc" if "ext_auc" in table else "val_auc"
    table = table.sort_values(rank_by, ascending=False, kind="stable")
    out = config.resolve(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    table.round(4).to_csv(out, index=False)
    shown = ["variant", "head", "tta", "val_auc", *[c for c in ("ext_auc", "ext_sensitivity", "ext_specificity")
                                                    if c in table],
             "gamma0.6_auc", "gamma1.6_auc", "contrast0.6_auc", "gamma1.6_specificity"]
    shown += [c for c in ("orig16_auc", "orig16_specificity") if c in table]
    print(table[shown].round(3).to_string(index=False))
    print(f"ranked by {rank_by} ({len(table)} variants tried); "
          f"wrote {config.relative_to_project(out)}; total {time.time() - started:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
