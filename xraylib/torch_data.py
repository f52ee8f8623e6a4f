"""PyTorch input pipeline for the multi-class study (notebook 04).

A :class:`ManifestDataset` reads one split of the manifest written by
``xraylib prepare multiclass`` (patient-level splits) and behaves like
``torchvision.datasets.ImageFolder``: ``classes``, ``class_to_idx``,
``samples`` and ``targets``, class index = position in the sorted class names.

Pixels come from :func:`xraylib.images.prepare`, the one image preparation of
the repository (8-bit grayscale, resized and optionally equalised), so Keras,
PyTorch, Grad-CAM and the command-line predictor see identical pixels. The
transforms then follow the original notebook: random horizontal flip (training
only), grayscale copied to three channels and ImageNet mean/std normalisation.

:func:`make_loader` builds the ``DataLoader`` of the original (batch 20, two
workers, shuffled) with a seeded generator and :func:`seed_worker`, which seeds
NumPy and ``random`` in every worker (the original's fix for workers that all
drew the same random numbers). ``weighted=True`` replaces shuffling by a
``WeightedRandomSampler`` with weights inversely proportional to class size.

:func:`keep_decoded` prepares every image of the given data sets once and keeps them in memory, as
``tf.data``'s ``cache()`` does for the binary study, when they fit under ``train_multiclass.image_cache_mb``:
an epoch then only flips, converts and normalises, instead of decoding and resizing every file again, and the
loader's workers no longer take the cores from the training step. The random flips are still drawn in the
workers from the same seeds, so a run trains to the same bits with and without the cache.
"""

from __future__ import annotations

import logging
import random
from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd
import torch
from torch.utils.data import DataLoader, Dataset, RandomSampler, SequentialSampler, WeightedRandomSampler
from torchvision import transforms

from xraylib import config, data, torch_distributed
from xraylib.data import SPLITS
from xraylib.images import EQUALIZE_MODES, RESIZE_MODES, prepare

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

log = logging.getLogger(__name__)


class GrayToTensor:
    """``uint8`` image ``(H, W)`` -> float tensor ``(3, H, W)`` in [0, 1] (gray copied to RGB)."""

    def __call__(self, gray: np.ndarray) -> torch.Tensor:
        x = torch.from_numpy(np.array(gray, dtype=np.uint8, copy=True)).to(torch.float32).div_(255.0)
        return x.unsqueeze(0).expand(3, -1, -1).contiguous()

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"


AUGMENTATIONS = ("none", "flip", "radiograph")


def build_transform(train: bool, augment: str = "flip") -> transforms.Compose:
    """The transforms after resizing: augmentation (training only), tensor, ImageNet normalisation.

    ``augment``: ``none`` trains on the images as they are (ablations, exactness tests); ``flip`` is the
    original notebook's random horizontal flip. ``radiograph`` adds what a
    chest film varies by between sites and positioning, kept small so the anatomy stays plausible: a random
    affine (rotation up to 7 degrees, shift up to 5 %, scale 0.92-1.08, new corners filled black like a
    film's collimation) and brightness / contrast jitter of 15 % (exposure). Chosen on validation
    (``benchmarks/torch_cpu_recipe.py recipe``), not on a test split.
    """
    if augment not in AUGMENTATIONS:
        raise ValueError(f"train_multiclass.augment must be one of {AUGMENTATIONS}, got {augment!r}")
    steps: list = [GrayToTensor()]
    if train and augment != "none":
        steps.append(transforms.RandomHorizontalFlip(p=0.5))
        if augment == "radiograph":
            steps.append(transforms.RandomAffine(degrees=7, translate=(0.05, 0.05), scale=(0.92, 1.08), fill=0.0))
            steps.append(transforms.ColorJitter(brightness=0.15, contrast=0.15))
    steps.append(transforms.Normalize(IMAGENET_MEAN, IMAGENET_STD))
    return transforms.Compose(steps)


def check_image_settings(image_size: int, resize_mode: str, equalize_method: str) -> None:
    """Raise ``ValueError`` naming the parameter when an image setting is invalid."""
    if isinstance(image_size, bool) or int(image_size) != image_size or image_size < 32:
        raise ValueError(f"train_multiclass.image_size must be an integer >= 32 (the networks downsample 32x), "
                         f"got {image_size!r}")
    if resize_mode not in RESIZE_MODES:
        raise ValueError(f"data.resize must be one of {RESIZE_MODES}, got {resize_mode!r}")
    if equalize_method not in EQUALIZE_MODES:
        raise ValueError(f"data.equalize must be one of {EQUALIZE_MODES}, got {equalize_method!r}")


class ImageListDataset(Dataset):
    """Images given as ``(path, class_index)`` pairs, prepared by :func:`xraylib.images.prepare`.

    Args:
        samples: ``(path, class_index)`` pairs; relative paths are taken from the project root.
        class_names: names in class-index order.
        image_size: side length after resizing.
        resize_mode: ``stretch`` (original) or ``pad``.
        equalize_method: ``none``, ``hist`` or ``clahe``.
        train: apply the training augmentation.
        augment: which augmentation (:data:`AUGMENTATIONS`, see :func:`build_transform`).
    """

    def __init__(self, samples: Sequence[tuple[str | Path, int]], class_names: Sequence[str], image_size: int,
                 resize_mode: str = "stretch", equalize_method: str = "none", train: bool = False,
                 augment: str = "flip"):
        check_image_settings(image_size, resize_mode, equalize_method)
        self.classes = list(class_names)
        self.class_to_idx = {name: i for i, name in enumerate(self.classes)}
        self.samples = [(str(config.resolve(p)), int(t)) for p, t in samples]
        self.targets = [t for _, t in self.samples]
        self.image_size = int(image_size)
        self.resize_mode = resize_mode
        self.equalize_method = equalize_method
        self.train = train
        self.augment = augment
        self.transform = build_transform(train, augment)
        # image size -> prepared images (N, size, size) uint8, filled by keep_decoded; datasets of the same
        # samples and settings may share one dict (the training images with and without augmentation)
        self.decoded: dict[int, np.ndarray] = {}

    def __len__(self) -> int:
        return len(self.samples)

    def load(self, index: int) -> np.ndarray:
        """The prepared ``uint8`` image of sample ``index`` (no augmentation, no normalisation)."""
        images = self.decoded.get(self.image_size)
        if images is not None:
            return images[index]
        return prepare(self.samples[index][0], self.image_size, self.resize_mode, self.equalize_method)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        return self.transform(self.load(index)), self.targets[index]


class ManifestDataset(ImageListDataset):
    """One split of a manifest (``data/processed/<task>/manifest.csv``), ImageFolder-style.

    Args:
        manifest: the manifest with a ``split`` column (:func:`xraylib.data.load_manifest`).
        split: ``train``, ``val`` or ``test``.
        class_names: class order; default :func:`xraylib.data.class_names` of the whole manifest,
            so every split uses the same indices even if a class is missing from one split.
        image_size, resize_mode, equalize_method: see :class:`ImageListDataset`.
        train: apply augmentation; default ``split == "train"``.
        augment: which augmentation (see :func:`build_transform`).

    Raises:
        ValueError: unknown split, empty split, or labels outside ``class_names``.
    """

    def __init__(self, manifest: pd.DataFrame, split: str, image_size: int, resize_mode: str = "stretch",
                 equalize_method: str = "none", class_names: Sequence[str] | None = None,
                 train: bool | None = None, augment: str = "flip"):
        if split not in SPLITS:
            raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
        names = list(class_names) if class_names is not None else sorted(manifest["label"].unique().tolist())
        rows = data.select_split(manifest, split)
        unknown = sorted(set(rows["label"]) - set(names))
        if unknown:
            raise ValueError(f"labels {unknown} in split {split!r} are not among the class names {names}")
        index = {name: i for i, name in enumerate(names)}
        super().__init__([(p, index[label]) for p, label in zip(rows["path"], rows["label"])], names,
                         image_size, resize_mode, equalize_method, train=(split == "train") if train is None else train,
                         augment=augment)
        self.split = split


class _Prepared(Dataset):
    """The prepared images of a data set as tensors, read from the files (what :func:`keep_decoded` stores)."""

    def __init__(self, dataset: ImageListDataset):
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int) -> torch.Tensor:
        return torch.tensor(self.dataset.load(index))  # nothing held yet at this size: read from the file


def decoded_bytes(datasets: Sequence[ImageListDataset]) -> int:
    """Memory the prepared images of ``datasets`` take at their current image size (``uint8``, one channel)."""
    return sum(len(d) * d.image_size ** 2 for d in datasets)


def keep_decoded(datasets: Sequence[ImageListDataset], max_mib: float, num_workers: int = 0,
                 batch_size: int = 64) -> bool:
    """Prepare every image of ``datasets`` once, at their current image size, and keep them in memory.

    The images are read by a ``DataLoader`` with ``num_workers`` processes and stored as one ``uint8`` array per
    data set in :attr:`ImageListDataset.decoded`; forked loader workers share it with the main process. The
    pixels are those :func:`xraylib.images.prepare` gives, so training and evaluation compute the same bits
    with and without it. Data sets already holding their images at that size are skipped.

    Args:
        datasets: data sets to fill (share ``decoded`` between data sets of the same samples beforehand).
        max_mib: memory limit in MiB (``train_multiclass.image_cache_mb``); 0 keeps nothing.
        num_workers: processes reading the files.
        batch_size: images per read batch.

    Returns:
        Whether the images are now held in memory (``False``: over the limit, nothing kept).
    """
    if max_mib < 0:
        raise ValueError(f"train_multiclass.image_cache_mb must be >= 0, got {max_mib!r}")
    todo = [d for d in datasets if d.image_size not in d.decoded]
    todo = [d for i, d in enumerate(todo) if all(d.decoded is not e.decoded for e in todo[:i])]
    need = decoded_bytes(todo) / 2 ** 20
    if need > max_mib:
        if max_mib > 0:
            log.info("not keeping the decoded images in memory: %.0f MiB > train_multiclass.image_cache_mb %s",
                     need, max_mib)
        return False
    for dataset in todo:
        images = np.empty((len(dataset), dataset.image_size, dataset.image_size), dtype=np.uint8)
        # a generator of its own: the loader's worker seed must not be drawn from torch's global generator,
        # which the training run goes on to use (dropout)
        loader = DataLoader(_Prepared(dataset), batch_size=batch_size, num_workers=num_workers,
                            generator=torch.Generator())
        start = 0
        for batch in loader:
            images[start:start + len(batch)] = batch.numpy()
            start += len(batch)
        dataset.decoded[dataset.image_size] = images
    return True


def class_counts(targets: Sequence[int], n_classes: int) -> np.ndarray:
    """Number of samples per class index (length ``n_classes``)."""
    return np.bincount(np.asarray(targets, dtype=np.int64), minlength=n_classes)


def sample_weights(targets: Sequence[int], n_classes: int) -> torch.Tensor:
    """Per-sample weights ``1 / count(class of sample)`` for ``WeightedRandomSampler``.

    Each class then has the same total weight, so a weighted epoch draws every
    class equally often in expectation.

    Raises:
        ValueError: a target outside ``0..n_classes-1``.
    """
    targets = np.asarray(targets, dtype=np.int64)
    if targets.size and (targets.min() < 0 or targets.max() >= n_classes):
        raise ValueError(f"targets must lie in 0..{n_classes - 1}, got range {targets.min()}..{targets.max()}")
    counts = class_counts(targets, n_classes)
    per_class = np.where(counts > 0, 1.0 / np.maximum(counts, 1), 0.0)
    return torch.as_tensor(per_class[targets], dtype=torch.double)


def seed_worker(worker_id: int) -> None:  # noqa: ARG001 - DataLoader passes the worker id
    """``worker_init_fn``: seed NumPy and ``random`` from the worker's torch seed.

    The torch seed of a worker is ``base_seed + worker_id``, where the base seed
    is drawn from the loader's generator at every epoch; so workers differ from
    each other and from epoch to epoch, and a seeded generator repeats the run.
    """
    worker_seed = torch.initial_seed() % 2**32
    np.random.seed(worker_seed)
    random.seed(worker_seed)


def make_generator(seed: int) -> torch.Generator:
    """A CPU ``torch.Generator`` seeded with ``seed`` (drives shuffling and worker seeds)."""
    generator = torch.Generator()
    generator.manual_seed(int(seed))
    return generator


def make_loader(dataset: ImageListDataset, batch_size: int = 20, *, shuffle: bool = False, weighted: bool = False,
                num_workers: int = 2, generator: torch.Generator | None = None,
                pin_memory: bool = False, shard: tuple[int, int] | None = None) -> DataLoader:
    """DataLoader of the original notebook, reproducible.

    Args:
        dataset: a :class:`ImageListDataset`.
        batch_size: images per batch (20 in the original).
        shuffle: reshuffle every epoch (training).
        weighted: draw with a ``WeightedRandomSampler`` (with replacement, one epoch =
            ``len(dataset)`` draws) using :func:`sample_weights`; replaces ``shuffle``.
        num_workers: worker processes (2 in the original); 0 loads in the main process.
        generator: seeded generator for shuffling, sampling and worker seeds
            (:func:`make_generator`); its state is saved in checkpoints.
        pin_memory: pin batches for faster GPU transfer.
        shard: ``(rank, world_size)`` of a distributed run: ``batch_size`` is then the global batch and this
            process loads its share of each (:class:`xraylib.torch_distributed.ShardedBatchSampler`).
    """
    if batch_size < 1:
        raise ValueError(f"train_multiclass.batch_size must be >= 1, got {batch_size!r}")
    if num_workers < 0:
        raise ValueError(f"train_multiclass.num_workers must be >= 0, got {num_workers!r}")
    generator = generator if generator is not None else make_generator(0)
    sampler = None
    if weighted:
        weights = sample_weights(dataset.targets, len(dataset.classes))
        sampler = WeightedRandomSampler(weights, num_samples=len(dataset), replacement=True, generator=generator)
        shuffle = False
    if shard is not None and shard[1] > 1:
        if sampler is None:  # the same seeded order in every process
            sampler = RandomSampler(dataset, generator=generator) if shuffle else SequentialSampler(dataset)
        batches = torch_distributed.ShardedBatchSampler(sampler, batch_size, *shard)
        return DataLoader(dataset, batch_sampler=batches, num_workers=num_workers, worker_init_fn=seed_worker,
                          generator=generator, pin_memory=pin_memory, persistent_workers=False)
    return DataLoader(dataset, batch_size=batch_size, shuffle=shuffle, sampler=sampler, num_workers=num_workers,
                      worker_init_fn=seed_worker, generator=generator, pin_memory=pin_memory,
                      persistent_workers=False)


def denormalize(batch: torch.Tensor) -> torch.Tensor:
    """Undo the ImageNet normalisation (for showing augmented inputs)."""
    mean = torch.tensor(IMAGENET_MEAN, dtype=batch.dtype).view(-1, 1, 1)
    std = torch.tensor(IMAGENET_STD, dtype=batch.dtype).view(-1, 1, 1)
    return (batch * std + mean).clamp(0, 1)
