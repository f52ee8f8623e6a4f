"""Training throughput of the Keras binary path, each comparison measured side by side in one run (issue "Scale out").

Two parts; each runs every variant in a fresh Python process (TensorFlow only, never torch), appends one CSV row
per variant under ``--out`` (default ``reports/benchmarks/throughput_tf_<part>.csv``, with the ``cpu`` model and
thread count) and prints the ratios:

``pipeline``  the project's ``tf.data`` pipeline (:func:`xraylib.tf_data.image_dataset`: decode through
              ``images.prepare`` once, ``cache()``, seeded shuffle, batch, prefetch) against
              ``tf.data.Dataset.from_tensor_slices`` of pre-decoded ``float32`` arrays (shuffled, batched,
              prefetched), through the same Keras model and step: params.yaml's binary model (by default the small
              CNN from scratch, 64 px, batch 32, its augmentation layers and loss). Images/s of the first epoch
              (the project's pipeline decodes while it fills its cache) and of the later epochs (median; the
              figure the target is about). Target >= 0.9x.
``cache``     the frozen-feature cache: :func:`xraylib.tf_train.train_binary` with a pretrained Xception backbone
              (the ImageNet weights file in ``../shared/weights``) and ``cache_features`` on against off (off: the
              frozen backbone runs on every training and validation image every epoch). Epoch time (training +
              validation, median of the epochs after the first) and the whole call; the one-time extraction of the
              cached run is reported apart. Target >= 10x per epoch. An epoch timer is appended to the callbacks
              ``train_binary`` builds (its private ``_callbacks``) and ``cache_activations`` is timed by wrapping
              it, in the measuring process only.

Data: a seeded subset of a class-per-folder root, by default the Kermany training folder
``../shared/data/kermany224/train`` (relative paths are taken from the repository root); the image preparation
(resize, equalisation) is params.yaml's ``data`` section, the training settings its ``train_binary`` section.
``--threads 0`` leaves TensorFlow's default intra-op thread count (the project sets none).

Real measurements (run from the repository root on a quiet machine; times on 2 cores)::

    python benchmarks/throughput_tf.py pipeline    # 2,000 images, 4 epochs, 5 repeats: about 8 min
    python benchmarks/throughput_tf.py cache       # 400 + 100 images at 96 px, 4 epochs: about 2 min

Smoke test (seconds)::

    python benchmarks/throughput_tf.py pipeline --images 96 --epochs 2 --repeats 2 --out /tmp/tp_tf_pipeline.csv
"""

from __future__ import annotations

import argparse
import datetime
import os
import statistics
import time
from pathlib import Path

import numpy as np

import throughput_common
from throughput_common import figure, finish, ratio, run_child, subset_manifest
from xraylib import config, numerics

XCEPTION_WEIGHTS = "../shared/weights/xception_notop_imagenet.weights.h5"


# ----------------------------------------------------------------------------------------------- shared helpers








def measure(spec: dict, timeout: float) -> dict:
    """One variant in a fresh interpreter (:func:`throughput_common.run_child`)."""
    return run_child(__file__, spec, timeout, spec["variant"])


def common_columns(part: str, threads: int, result: dict) -> dict:
    """Columns of every row: benchmark part, date, CPU model, cores, threads (0 = TF default), TF version."""
    return {"benchmark": f"throughput_tf {part}", "date": datetime.date.today().isoformat(),
            "cpu": numerics.cpu_model(), "cores": os.cpu_count(), "threads": threads,
            "tensorflow": result.get("tensorflow", "")}








# ------------------------------------------------------------------------------------- measurements (children)


def _start_tensorflow(threads: int):
    """Import TensorFlow quietly and set its intra-op threads (0: its default); returns ``tf``."""
    from xraylib.tf_runtime import tf

    if threads:
        tf.config.threading.set_intra_op_parallelism_threads(int(threads))
    return tf


def _epoch_timer():
    """A Keras callback whose ``seconds`` lists the wall time of every epoch (training + validation)."""
    import keras

    class EpochTimer(keras.callbacks.Callback):
        def __init__(self):
            super().__init__()
            self.seconds: list[float] = []

        def on_epoch_begin(self, epoch, logs=None):
            self._start = time.perf_counter()

        def on_epoch_end(self, epoch, logs=None):
            self.seconds.append(time.perf_counter() - self._start)

    return EpochTimer()


def _study_config(spec: dict, **overrides):
    """params.yaml's TrainConfig, ``data.resize`` and the equalisation of the binary model."""
    from xraylib import tf_train

    params = config.load_params()
    section = params["train_binary"]
    cfg = tf_train.TrainConfig.from_params(section, seed=params["seed"], image_size=spec["image_size"],
                                           batch_size=spec["batch_size"], epochs=spec["epochs"], **overrides)
    equalize = section.get("equalize_override") or params["data"]["equalize"]
    return cfg, params["data"]["resize"], equalize


def _later_epochs(seconds: list[float]) -> float:
    """Median epoch time after the first (which traces the graphs and, for tf_data, decodes); the first if alone."""
    return statistics.median(seconds[1:] or seconds)


def measure_pipeline(spec: dict) -> dict:
    """``model.fit`` of the binary model on the project's tf.data pipeline or on in-memory arrays."""
    tf = _start_tensorflow(spec["threads"])
    import keras

    from xraylib import tf_data, tf_model, tf_train
    from xraylib.tf_layers import class_frequency_weights

    cfg, resize, equalize = _study_config(spec)
    frame = subset_manifest(spec["root"], spec["images"], 0, spec["seed"])
    labels = tf_data.encode_labels(frame["label"], sorted(frame["label"].unique()))
    decode_s = None
    if spec["variant"] == "tf_data":
        dataset = tf_data.image_dataset(frame["path"], labels, image_size=cfg.image_size, resize_mode=resize,
                                        equalize_method=equalize, batch_size=cfg.batch_size, shuffle=True,
                                        seed=cfg.seed)
    else:
        start = time.perf_counter()
        pixels = tf_data.load_images(frame["path"], cfg.image_size, resize, equalize)[..., None].astype(np.float32)
        decode_s = time.perf_counter() - start
        dataset = (tf.data.Dataset.from_tensor_slices((pixels, labels.astype(np.float32)))
                   .shuffle(len(pixels), seed=cfg.seed, reshuffle_each_iteration=True)
                   .batch(cfg.batch_size).prefetch(tf.data.AUTOTUNE))
    tf_train.set_determinism(cfg.seed)
    model = tf_model.build_model(cfg.backbone, cfg.image_size, cfg.weights, input_norm=cfg.input_norm,
                                 dropout=cfg.dropout, l2=cfg.l2, augment=cfg.augment, seed=cfg.seed)
    loss, class_weight = tf_train.make_loss(cfg.imbalance, class_frequency_weights(labels), cfg.label_smoothing)
    model.compile(optimizer=keras.optimizers.Adam(cfg.learning_rate), loss=loss,
                  metrics=[keras.metrics.AUC(name="auc"), keras.metrics.BinaryAccuracy(name="accuracy")])
    timer = _epoch_timer()
    model.fit(dataset, epochs=cfg.epochs, class_weight=class_weight, callbacks=[timer], verbose=0)
    n = len(labels)
    return {"first_images_per_s": n / timer.seconds[0], "images_per_s": n / _later_epochs(timer.seconds),
            "epoch_s": timer.seconds, "decode_s": decode_s, "backbone": cfg.backbone, "tensorflow": tf.__version__}


def measure_cache(spec: dict) -> dict:
    """:func:`xraylib.tf_train.train_binary` with a pretrained backbone, ``cache_features`` on or off."""
    tf = _start_tensorflow(spec["threads"])
    from xraylib import tf_data, tf_train

    cfg, resize, equalize = _study_config(spec, backbone=spec["backbone"], weights=spec["weights"],
                                          fine_tune_epochs=0, cache_views=1, tta="none",
                                          cache_features=spec["variant"] == "cached")
    manifest = subset_manifest(spec["root"], spec["images"], spec["val_images"], spec["seed"])
    names = sorted(manifest["label"].unique())
    datasets = tf_data.split_datasets(manifest, names, image_size=cfg.image_size, resize_mode=resize,
                                      equalize_method=equalize, batch_size=cfg.batch_size, seed=cfg.seed,
                                      splits=("train", "val"))
    timer, extract_s = _epoch_timer(), []
    callbacks, cache_activations = tf_train._callbacks, tf_train.cache_activations

    def timed_callbacks(*args, **kwargs):
        return [*callbacks(*args, **kwargs), timer]

    def timed_cache(*args, **kwargs):
        start = time.perf_counter()
        cached = cache_activations(*args, **kwargs)
        extract_s.append(time.perf_counter() - start)
        return cached

    tf_train._callbacks, tf_train.cache_activations = timed_callbacks, timed_cache
    start = time.perf_counter()
    result = tf_train.train_binary(cfg, datasets)
    total_s = time.perf_counter() - start
    return {"epoch_s": _later_epochs(timer.seconds), "first_epoch_s": timer.seconds[0], "epochs": timer.seconds,
            "extract_s": sum(extract_s), "total_s": total_s, "epochs_run": len(result.history),
            "tensorflow": tf.__version__}


MEASURES = {"pipeline": measure_pipeline, "cache": measure_cache}


# ------------------------------------------------------------------------------------------ parts (the parent)


def part_pipeline(args) -> None:
    """The project's tf.data pipeline vs pre-decoded in-memory arrays, same model and step, ``--repeats`` times
    interleaved (:func:`throughput_common.interleaved`)."""
    spec = {"kind": "pipeline", "root": args.root, "images": args.images, "seed": args.seed, "threads": args.threads,
            "image_size": args.image_size, "batch_size": args.batch_size, "epochs": args.epochs}
    specs = {v: {**spec, "variant": v} for v in ("memory", "tf_data")}
    rows = []
    for k, results in enumerate(throughput_common.interleaved(specs, args.repeats,
                                                              lambda s: measure(s, args.timeout)), 1):
        memory = results["memory"]
        for variant in specs:
            result = results[variant]
            rows.append({**common_columns("pipeline", args.threads, result), "repeat": k, "variant": variant,
                         "backbone": result.get("backbone", ""), "images": args.images,
                         "image_size": args.image_size, "batch_size": args.batch_size, "epochs": args.epochs,
                         "first_epoch_images_per_s": figure(result, "first_images_per_s"),
                         "later_epochs_images_per_s": figure(result, "images_per_s"),
                         "ratio_first_epoch": ratio(result.get("first_images_per_s"),
                                                    memory.get("first_images_per_s")),
                         "ratio_later_epochs": ratio(result.get("images_per_s"), memory.get("images_per_s")),
                         "target": ">= 0.9 (later epochs)",
                         "decode_s": round(result["decode_s"], 1) if result.get("decode_s") is not None else ""})
    finish(rows, args.out, ["repeat", "variant", "first_epoch_images_per_s", "later_epochs_images_per_s",
                            "ratio_first_epoch", "ratio_later_epochs", "decode_s"],
           by=["variant"], summarised=["later_epochs_images_per_s", "ratio_later_epochs", "ratio_first_epoch"])


def part_cache(args) -> None:
    """Frozen-feature cache on vs off: epoch time and the whole training call."""
    spec = {"kind": "cache", "root": args.root, "images": args.images, "val_images": args.val_images,
            "seed": args.seed, "threads": args.threads, "image_size": args.image_size,
            "batch_size": args.batch_size, "epochs": args.epochs, "backbone": args.backbone,
            "weights": args.weights}
    results = {v: measure({**spec, "variant": v}, args.timeout) for v in ("uncached", "cached")}
    uncached = results["uncached"]
    rows = []
    for variant, result in results.items():
        rows.append({**common_columns("cache", args.threads, result), "variant": variant,
                     "backbone": args.backbone, "weights": Path(args.weights).name, "images": args.images,
                     "val_images": args.val_images, "image_size": args.image_size, "batch_size": args.batch_size,
                     "epochs": args.epochs, "epoch_s": figure(result, "epoch_s", 2),
                     "first_epoch_s": figure(result, "first_epoch_s", 2),
                     "extract_s": figure(result, "extract_s", 1), "total_s": figure(result, "total_s", 1),
                     "speedup_epoch": ratio(uncached.get("epoch_s"), result.get("epoch_s")),
                     "speedup_total": ratio(uncached.get("total_s"), result.get("total_s")),
                     "target": ">= 10 (epoch)"})
    finish(rows, args.out, ["variant", "epoch_s", "first_epoch_s", "extract_s", "total_s", "speedup_epoch",
                            "speedup_total"])


# ------------------------------------------------------------------------------------------------ command line


def _common_arguments(parser: argparse.ArgumentParser, part: str, *, images: int, image_size: int,
                      epochs: int) -> None:
    parser.add_argument("--root", default="../shared/data/kermany224/train",
                        help="class-per-folder image root, two classes (relative: from the repository root)")
    parser.add_argument("--images", type=int, default=images, help="training images")
    parser.add_argument("--image-size", type=int, default=image_size)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--epochs", type=int, default=epochs, help="epochs (>= 2: the later ones are the figure)")
    parser.add_argument("--threads", type=int, default=0, help="TensorFlow intra-op threads (0: its default)")
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--timeout", type=float, default=1800, help="seconds per measurement")
    parser.add_argument("--out", default=f"reports/benchmarks/throughput_tf_{part}.csv")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="part", required=True)
    pipeline = sub.add_parser("pipeline", help="tf_data pipeline vs in-memory arrays")
    _common_arguments(pipeline, "pipeline", images=2000, image_size=64, epochs=4)
    pipeline.add_argument("--repeats", type=int, default=5,
                          help="measurements per variant, interleaved (median and range printed)")
    cache = sub.add_parser("cache", help="frozen-feature cache on vs off")
    _common_arguments(cache, "cache", images=400, image_size=96, epochs=4)
    cache.add_argument("--val-images", type=int, default=100)
    cache.add_argument("--backbone", default="xception")
    cache.add_argument("--weights", default=XCEPTION_WEIGHTS,
                       help="include_top=False weights file of the backbone (relative: from the repository root)")
    return parser


def main(argv: list[str] | None = None) -> int:
    return throughput_common.main(argv, build_parser(), MEASURES,
                                  {"pipeline": part_pipeline, "cache": part_cache})


if __name__ == "__main__":
    raise SystemExit(main())
