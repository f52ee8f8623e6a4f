"""``tf.data`` input pipeline of the binary model, read from the patient-level manifest.

This replaces the original notebook's ``image_dataset_from_directory`` calls and
its train+val re-split (which put images of one patient on both sides) by the
manifest's ``split`` column (:func:`xraylib.data.assign_splits`, by patient).

Per image: :func:`xraylib.images.prepare` (decode, grey, resize, equalise: the
one preparation shared with PyTorch and Grad-CAM) runs once through
``tf.numpy_function`` before ``cache()``; later epochs read the cached uint8
pixels. Training data is shuffled with a fixed seed (same order every run),
batches are prefetched with ``AUTOTUNE``. The shuffle order depends on the seed and on
TensorFlow's global seed: call :func:`xraylib.tf_train.set_determinism` first
(notebook 03 does) to get the same order in every run. Elements are ``(image, label)`` with
``image`` float32 ``(S, S, 1)`` in 0..255 and ``label`` float32 (1 = positive class).
"""

from __future__ import annotations

from pathlib import Path

from xraylib.tf_runtime import tf  # noqa: I001  (first: TensorFlow imported quietly, before keras)
import numpy as np
import pandas as pd

from xraylib import config, data, images


def split_frame(manifest: pd.DataFrame, split: str) -> pd.DataFrame:
    """Rows of one split (``train``/``val``/``test``), in manifest order (:func:`xraylib.data.select_split`)."""
    return data.select_split(manifest, split)


def encode_labels(labels, class_names: list[str]) -> np.ndarray:
    """Class names -> 0/1 (index in ``class_names``; binary task: index 1 is the positive class).

    Raises:
        ValueError: a label that is not one of ``class_names``, or not exactly two classes.
    """
    if len(class_names) != 2:
        raise ValueError(f"the binary model needs exactly 2 classes, got {class_names}")
    labels = list(labels)
    unknown = sorted(set(labels) - set(class_names))
    if unknown:
        raise ValueError(f"labels {unknown} are not among the model's classes {class_names}")
    return np.array([class_names.index(label) for label in labels], dtype=np.int64)


def _prepare_fn(image_size: int, resize_mode: str, equalize_method: str):
    def load(path: bytes) -> np.ndarray:
        gray = images.prepare(config.resolve(path.decode()), image_size, resize_mode, equalize_method)
        return gray[..., None]

    return load


def image_dataset(paths, labels, *, image_size: int, resize_mode: str, equalize_method: str, batch_size: int,
                  shuffle: bool = False, seed: int = 0, cache: bool = True) -> tf.data.Dataset:
    """A batched ``(image, label)`` dataset from file paths and 0/1 labels.

    Args:
        paths: image files (relative to the project root or absolute).
        labels: 0/1 per file (any numbers when only predicting).
        image_size, resize_mode, equalize_method: arguments of :func:`xraylib.images.prepare`.
        batch_size: images per batch.
        shuffle: reshuffle every epoch with ``seed`` (deterministic order sequence).
        seed: shuffle seed.
        cache: keep prepared pixels in memory after the first pass.
    """
    paths = [str(p) for p in paths]
    if not paths:
        raise ValueError("no image paths given to image_dataset")
    if int(batch_size) < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size!r}")
    size = int(image_size)
    load = _prepare_fn(size, resize_mode, equalize_method)

    def decode(path, label):
        image = tf.numpy_function(load, [path], tf.uint8, stateful=False)
        return tf.ensure_shape(image, (size, size, 1)), label

    ds = tf.data.Dataset.from_tensor_slices((paths, np.asarray(labels, dtype=np.float32)))
    ds = ds.map(decode, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    if cache:
        ds = ds.cache()
    if shuffle:
        ds = ds.shuffle(len(paths), seed=int(seed), reshuffle_each_iteration=True)
    ds = ds.batch(int(batch_size)).map(lambda x, y: (tf.cast(x, tf.float32), y), num_parallel_calls=tf.data.AUTOTUNE,
                                       deterministic=True)
    return ds.prefetch(tf.data.AUTOTUNE)


def split_datasets(manifest: pd.DataFrame, class_names: list[str], *, image_size: int, resize_mode: str,
                   equalize_method: str, batch_size: int, seed: int,
                   splits: tuple[str, ...] = ("train", "val", "test")) -> dict:
    """One dataset per split; only ``train`` is shuffled. Also returns the 0/1 labels per split.

    Returns:
        ``{split: {"dataset": tf.data.Dataset, "labels": np.ndarray, "frame": DataFrame}}``.
    """
    out = {}
    for split in splits:
        frame = split_frame(manifest, split)
        labels = encode_labels(frame["label"], class_names)
        out[split] = {
            "frame": frame,
            "labels": labels,
            "dataset": image_dataset(frame["path"], labels, image_size=image_size, resize_mode=resize_mode,
                                     equalize_method=equalize_method, batch_size=batch_size,
                                     shuffle=split == "train", seed=seed),
        }
    return out


def load_images(paths, image_size: int, resize_mode: str, equalize_method: str) -> np.ndarray:
    """Prepared uint8 images ``(N, S, S)`` as numpy (the same pixels the datasets yield)."""
    return np.stack([images.prepare(config.resolve(Path(p)), int(image_size), resize_mode, equalize_method)
                     for p in paths]).astype(np.uint8)


def manifest_summary(manifest_dir: str | Path) -> dict:
    """The ``summary.json`` written with a manifest (source, counts), or ``{}`` when absent."""
    import json

    path = config.resolve(manifest_dir) / "summary.json"
    return json.loads(path.read_text()) if path.is_file() else {}
