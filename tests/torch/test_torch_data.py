"""Input pipeline: ImageFolder equivalence, identical pixels, sampler weights and worker seeding."""

from __future__ import annotations

import random
from collections import Counter

import numpy as np
import pytest
import torch
from torch.utils.data import Dataset, WeightedRandomSampler
from torchvision.datasets import ImageFolder

from xraylib import images
from xraylib.torch_data import (IMAGENET_MEAN, IMAGENET_STD, ManifestDataset, decoded_bytes, denormalize,
                                keep_decoded, make_generator, make_loader, sample_weights, seed_worker)


def test_manifest_split_matches_imagefolder(tiny_root, tiny_manifest):
    ds = ManifestDataset(tiny_manifest, "train", 32)
    reference = ImageFolder(str(tiny_root / "train"))
    assert ds.classes == reference.classes
    assert ds.class_to_idx == reference.class_to_idx
    assert [(p, t) for p, t in ds.samples] == [(p, t) for p, t in reference.samples]
    assert ds.train and not ManifestDataset(tiny_manifest, "test", 32).train


def test_pixels_come_from_images_prepare(tiny_manifest):
    ds = ManifestDataset(tiny_manifest, "val", 36, resize_mode="pad", equalize_method="hist")
    x, y = ds[0]
    assert x.shape == (3, 36, 36) and x.dtype == torch.float32
    assert y == ds.targets[0]
    expected = images.prepare(ds.samples[0][0], 36, "pad", "hist").astype(np.float32) / 255.0
    restored = denormalize(x).numpy()
    for channel in restored:  # gray copied to three channels, ImageNet mean/std undone
        np.testing.assert_allclose(channel, expected, atol=1e-5)
    mean = torch.tensor(IMAGENET_MEAN).view(3, 1, 1)
    std = torch.tensor(IMAGENET_STD).view(3, 1, 1)
    torch.testing.assert_close(x, (torch.from_numpy(expected).expand(3, -1, -1) - mean) / std)


def test_flip_only_in_training(tiny_manifest):
    ds = ManifestDataset(tiny_manifest, "train", 32, train=False)
    torch.manual_seed(0)
    first = [ds[i][0] for i in range(len(ds))]
    assert all(torch.equal(a, ds[i][0]) for i, a in enumerate(first)), "evaluation transform is deterministic"
    augmented = ManifestDataset(tiny_manifest, "train", 32)
    samples = [augmented[i][0] for i in range(len(ds))]
    flips = [torch.equal(x, torch.flip(a, dims=[2])) for x, a in zip(samples, first)]
    same = [torch.equal(x, a) for x, a in zip(samples, first)]
    assert any(flips) and not all(flips)
    assert all(f != s for f, s in zip(flips, same)), "each training image is either flipped or unchanged"


def test_no_augmentation_trains_on_the_images_as_they_are(tiny_manifest):
    plain = ManifestDataset(tiny_manifest, "train", 32, train=False)
    unaugmented = ManifestDataset(tiny_manifest, "train", 32, augment="none")
    torch.manual_seed(0)
    assert all(torch.equal(unaugmented[i][0], plain[i][0]) for i in range(len(plain)))


def test_radiograph_augmentation_moves_and_reexposes_only_training_images(tiny_manifest):
    plain = ManifestDataset(tiny_manifest, "train", 48, train=False)
    augmented = ManifestDataset(tiny_manifest, "train", 48, augment="radiograph")
    torch.manual_seed(0)
    for i in range(len(plain)):
        x, a = augmented[i][0], plain[i][0]
        assert x.shape == a.shape
        assert not torch.equal(x, a) and not torch.equal(x, torch.flip(a, dims=[2])), \
            "beyond a flip, every training image is shifted, rotated, scaled or re-exposed"
        assert (denormalize(x) - denormalize(a)).abs().mean() < 0.35, "a small change, not a different image"
    evaluation = ManifestDataset(tiny_manifest, "val", 48, augment="radiograph")
    assert torch.equal(evaluation[0][0], ManifestDataset(tiny_manifest, "val", 48)[0][0]), "no augmentation at test"
    with pytest.raises(ValueError, match="train_multiclass.augment must be one of"):
        ManifestDataset(tiny_manifest, "train", 48, augment="mixup")


def test_dataset_errors_name_the_problem(tiny_manifest):
    with pytest.raises(ValueError, match="split must be one of"):
        ManifestDataset(tiny_manifest, "holdout", 32)
    with pytest.raises(ValueError, match="no images in split 'val'"):
        ManifestDataset(tiny_manifest[tiny_manifest["split"] != "val"], "val", 32)
    with pytest.raises(ValueError, match="image_size must be an integer >= 32"):
        ManifestDataset(tiny_manifest, "train", 16)
    with pytest.raises(ValueError, match="not among the class names"):
        ManifestDataset(tiny_manifest, "train", 32, class_names=["NORMAL", "VIRUS"])


def test_sample_weights_are_inverse_class_frequencies():
    targets = [0, 0, 0, 1, 2, 2]
    weights = sample_weights(targets, 4)
    np.testing.assert_allclose(weights.numpy(), [1 / 3, 1 / 3, 1 / 3, 1.0, 0.5, 0.5])
    per_class = np.bincount(targets, weights=weights.numpy(), minlength=3)
    np.testing.assert_allclose(per_class, [1.0, 1.0, 1.0])  # every present class has the same total weight
    draws = list(WeightedRandomSampler(weights, 30000, generator=make_generator(0)))
    counts = Counter(targets[i] for i in draws)
    assert all(abs(counts[c] / 30000 - 1 / 3) < 0.02 for c in range(3))
    with pytest.raises(ValueError, match="targets must lie in 0..1"):
        sample_weights([0, 2], 2)


def test_weighted_loader_uses_the_seeded_generator(tiny_manifest):
    rows = tiny_manifest[~((tiny_manifest["label"] == "NORMAL") & tiny_manifest["path"].str.contains("_0[2-5]"))]
    ds = ManifestDataset(rows, "train", 32)
    assert Counter(ds.targets) == {0: 6, 1: 2, 2: 6}
    generator = make_generator(5)
    loader = make_loader(ds, 4, weighted=True, num_workers=0, generator=generator)
    assert isinstance(loader.sampler, WeightedRandomSampler) and loader.sampler.generator is generator
    # one over the class count: 1/6 for the six BACTERIA and six VIRUS images, 1/2 for the two NORMAL ones
    np.testing.assert_allclose(loader.sampler.weights.numpy(), [{0: 1 / 6, 1: 1 / 2, 2: 1 / 6}[t] for t in ds.targets])
    unweighted = make_loader(ds, 4, shuffle=True, num_workers=0, generator=make_generator(5))
    assert not isinstance(unweighted.sampler, WeightedRandomSampler)


def test_seed_worker_seeds_numpy_and_random_from_torch():
    torch.manual_seed(1234)
    seed_worker(0)
    assert np.random.random() == np.random.RandomState(1234).random_sample()
    assert random.random() == random.Random(1234).random()


class RandomProbe(Dataset):
    """Returns the random numbers a worker draws from numpy, random and torch, plus the worker id."""

    targets = [0] * 8
    classes = ["x"]

    def __len__(self):
        return 8

    def __getitem__(self, index):
        info = torch.utils.data.get_worker_info()
        return torch.tensor([np.random.random(), random.random(), float(torch.rand(())), info.id],
                            dtype=torch.float64)


def _draw(seed):
    loader = make_loader(RandomProbe(), 1, num_workers=2, generator=make_generator(seed))
    return torch.cat(list(loader))


def test_two_workers_draw_different_numbers_and_a_seed_repeats_them():
    first = _draw(7)
    worker = first[:, 3]
    for column in range(3):  # numpy, random, torch
        zero, one = first[worker == 0, column], first[worker == 1, column]
        assert len(zero) == len(one) == 4
        assert not set(zero.tolist()) & set(one.tolist()), "workers must not share random streams"
    torch.testing.assert_close(_draw(7), first, rtol=0, atol=0)
    assert not torch.equal(_draw(8)[:, :3], first[:, :3])


def test_augmentations_differ_between_workers_and_repeat_with_the_seed(tiny_manifest):
    plain = ManifestDataset(tiny_manifest, "train", 32, train=False)
    augmented = ManifestDataset(tiny_manifest, "train", 32)

    def flips(seed):
        loader = make_loader(augmented, 1, num_workers=2, generator=make_generator(seed))
        batches = [x[0] for x, _ in loader]
        assert all(torch.equal(b, plain[i][0]) or torch.equal(b, torch.flip(plain[i][0], dims=[2]))
                   for i, b in enumerate(batches))
        return [bool(torch.equal(b, torch.flip(plain[i][0], dims=[2]))) for i, b in enumerate(batches)]

    first = flips(11)
    assert first == flips(11), "same seed, same augmentations"
    worker0, worker1 = first[0::2], first[1::2]  # batches alternate between the two workers
    assert worker0 != worker1, "the two workers must not flip the same images"
    assert flips(11) != flips(12)


@pytest.mark.parametrize("num_workers", [0, 2])
def test_kept_images_are_the_prepared_pixels(tiny_manifest, num_workers):
    files = ManifestDataset(tiny_manifest, "train", 36, "pad", "hist", train=False)
    kept = ManifestDataset(tiny_manifest, "train", 36, "pad", "hist", train=False)
    state = torch.get_rng_state()
    assert keep_decoded([kept], max_mib=1, num_workers=num_workers, batch_size=4)  # 18 images: more than one batch
    assert torch.equal(torch.get_rng_state(), state)  # the run's random numbers are left as they were
    assert list(kept.decoded) == [36] and kept.decoded[36].shape == (18, 36, 36)
    for i in range(len(files)):
        np.testing.assert_array_equal(kept.load(i), images.prepare(files.samples[i][0], 36, "pad", "hist"))
        assert torch.equal(kept[i][0], files[i][0])
    kept.image_size = 32  # another size (progressive resizing's first epochs) reads the files again
    np.testing.assert_array_equal(kept.load(0), images.prepare(files.samples[0][0], 32, "pad", "hist"))


def test_kept_images_respect_the_memory_limit_and_are_shared(tiny_manifest):
    train = ManifestDataset(tiny_manifest, "train", 32)
    plain = ManifestDataset(tiny_manifest, "train", 32, train=False)
    plain.decoded = train.decoded
    val = ManifestDataset(tiny_manifest, "val", 32)
    assert decoded_bytes([train, val]) == (18 + 6) * 32 * 32
    assert not keep_decoded([train, val], max_mib=0) and not train.decoded and not val.decoded
    assert not keep_decoded([train, val], max_mib=decoded_bytes([train, val]) / 2 ** 20 * 0.99)
    assert not train.decoded and not val.decoded  # all or nothing
    assert keep_decoded([train, plain, val], max_mib=decoded_bytes([train, val]) / 2 ** 20)  # plain shares train's
    assert plain.decoded[32] is train.decoded[32] and val.decoded[32].shape == (6, 32, 32)
    kept = train.decoded[32]
    assert keep_decoded([train], max_mib=0)  # already held: nothing more to keep
    assert train.decoded[32] is kept
    with pytest.raises(ValueError, match="image_cache_mb must be >= 0"):
        keep_decoded([val], max_mib=-1)


def test_augmented_batches_are_the_same_with_kept_images(tiny_manifest):
    """The flips are drawn in the workers from the same seeds: the batches are identical bit for bit."""
    def batches(keep: bool) -> list[torch.Tensor]:
        ds = ManifestDataset(tiny_manifest, "train", 32)
        if keep:
            assert keep_decoded([ds], max_mib=1, num_workers=2)
        loader = make_loader(ds, 5, shuffle=True, weighted=True, num_workers=2, generator=make_generator(9))
        return [x for _ in range(2) for x, _ in loader]

    files, kept = batches(False), batches(True)
    assert len(files) == 8
    assert all(torch.equal(a, b) for a, b in zip(files, kept))
