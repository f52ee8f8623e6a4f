"""Tests for xraylib.synthetic (synthetic chest-X-ray-like demo data, not medical data)."""

import hashlib
import re
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from scipy import ndimage

from xraylib import synthetic
from xraylib.synthetic import CLASSES, generate, make_image

SMALL = dict(images_per_patient=(1, 2), image_size=64)


def _hashes(root: Path) -> dict:
    return {p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


def _load(path: Path) -> np.ndarray:
    img = Image.open(path)
    assert img.mode == "L"
    return np.asarray(img)


@pytest.fixture(scope="module")
def binary_ds(tmp_path_factory):
    out = tmp_path_factory.mktemp("bin")
    df = generate(out, "binary", n_patients={"NORMAL": 4, "PNEUMONIA": 6}, seed=1, **SMALL)
    return out, df


@pytest.fixture(scope="module")
def multi_ds(tmp_path_factory):
    out = tmp_path_factory.mktemp("multi")
    df = generate(out, "multiclass", n_patients=3, seed=2, **SMALL)
    return out, df


def test_constants():
    assert CLASSES == {"binary": ("NORMAL", "PNEUMONIA"),
                       "multiclass": ("COVID", "Lung_Opacity", "Normal", "Viral Pneumonia")}
    assert synthetic.DEFAULT_N_PATIENTS["binary"] == {"NORMAL": 70, "PNEUMONIA": 130}
    assert synthetic.DEFAULT_N_PATIENTS["multiclass"] == {
        "COVID": 60, "Lung_Opacity": 90, "Normal": 150, "Viral Pneumonia": 40}


@pytest.mark.parametrize("task", sorted(CLASSES))
def test_make_image_types_and_determinism(task):
    for label in CLASSES[task]:
        img, lesion, lung = make_image(label, task, 5, image_size=64)
        assert img.shape == lesion.shape == lung.shape == (64, 64)
        assert img.dtype == np.uint8 and lesion.dtype == bool and lung.dtype == bool
        assert 0.1 < lung.mean() < 0.6
        assert not (lesion & ~lung).any()
        assert lesion.any() == (label.lower() != "normal")
        img2, lesion2, lung2 = make_image(label, task, np.random.default_rng(5), image_size=64)
        assert np.array_equal(img, img2) and np.array_equal(lesion, lesion2) and np.array_equal(lung, lung2)
    assert not np.array_equal(make_image("NORMAL", "binary", 1)[0], make_image("NORMAL", "binary", 2)[0])


def test_anatomy_looks_like_chest_xray():
    img, _, lung = make_image("NORMAL", "binary", 0, difficulty=0.0)
    f = img.astype(float)
    assert f[:4, :4].mean() < 40  # dark background corner
    assert f[lung].mean() + 40 < f[40:60, 60:68].mean()  # lungs darker than mediastinum/spine
    cols = np.flatnonzero(lung.any(0))
    assert lung[:, :64].sum() > lung[:, 64:].sum()  # patient's left lung (image right) smaller: heart
    assert cols.min() < 40 and cols.max() > 88


def test_generate_is_deterministic(tmp_path):
    kw = dict(n_patients={"NORMAL": 2, "PNEUMONIA": 3}, **SMALL)
    df1 = generate(tmp_path / "a", "binary", seed=7, **kw)
    df2 = generate(tmp_path / "b", "binary", seed=7, **kw)
    generate(tmp_path / "c", "binary", seed=8, **kw)
    h = {k: _hashes(tmp_path / k / "chest_xray") for k in "abc"}
    assert h["a"] == h["b"] and len(h["a"]) == 3 * len(df1) + 1  # image, lesion mask, lung mask + README
    assert df1.equals(df2)
    assert h["a"] != h["c"]


def test_image_independent_of_generation_order(tmp_path):
    """A patient's images don't change when other classes/patients are added after it."""
    a = generate(tmp_path / "a", "multiclass", n_patients={"COVID": 2}, seed=3, **SMALL)
    generate(tmp_path / "b", "multiclass", n_patients={"COVID": 2, "Normal": 3}, seed=3, **SMALL)
    for p in a.path:
        assert (tmp_path / "a" / p).read_bytes() == (tmp_path / "b" / p).read_bytes()


def test_binary_layout(binary_ds):
    out, df = binary_ds
    root = out / "chest_xray"
    assert list(df.columns) == ["path", "label", "patient_id", "split", "lesion_mask", "lung_mask",
                                "lesion_fraction"]
    assert {p.name for p in root.iterdir()} == {"train", "test", "lesion_masks", "lung_masks", "SYNTHETIC_README.txt"}
    for split in ("train", "test"):
        for label in CLASSES["binary"]:
            files = sorted((root / split / label).glob("*.png"))
            sub = df[(df.split == split) & (df.label == label)]
            assert len(files) == len(sub) > 0
            assert {f.relative_to(out).as_posix() for f in files} == set(sub.path)
    assert df.groupby("label").patient_id.nunique().to_dict() == {"NORMAL": 4, "PNEUMONIA": 6}
    # 25 % of each class's patients (at least one) in test, never both splits
    assert df.groupby("patient_id").split.nunique().max() == 1
    assert df[df.split == "test"].groupby("label").patient_id.nunique().to_dict() == {
        "NORMAL": 1, "PNEUMONIA": 2}
    for row in df.itertuples():
        assert re.fullmatch(rf"chest_xray/(train|test)/{row.label}/synpat\d{{4}}_[12]\.png", row.path)
        assert Path(row.path).name.startswith(row.patient_id + "_")
        assert row.lesion_mask == "chest_xray/lesion_masks/" + row.path[len("chest_xray/"):]
        assert row.lung_mask == f"chest_xray/lung_masks/{row.path.split('chest_xray/', 1)[1]}"
        mask = _load(out / row.lesion_mask)
        assert mask.shape == _load(out / row.path).shape == (64, 64)
        assert set(np.unique(mask)) <= {0, 255}
        assert row.lesion_fraction == pytest.approx((mask > 0).mean())
    ks = df.path.str.extract(r"_(\d+)\.png$")[0].astype(int).groupby(df.patient_id).agg(list)
    assert all(sorted(k) == list(range(1, len(k) + 1)) and 1 <= len(k) <= 2 for k in ks)
    readme = (root / "SYNTHETIC_README.txt").read_text()
    assert "NOT MEDICAL DATA" in readme and "xraylib.synthetic" in readme and "seed=1" in readme


def test_multiclass_layout(multi_ds):
    out, df = multi_ds
    root = out / "COVID-19_Radiography_Dataset"
    assert {p.name for p in root.iterdir()} == set(CLASSES["multiclass"]) | {
        "lesion_masks", "SYNTHETIC_README.txt"}
    assert (df.split == "").all()
    assert df.patient_id.nunique() == 12
    assert df.groupby("patient_id").label.nunique().max() == 1
    for label in CLASSES["multiclass"]:
        images = sorted((root / label / "images").glob("*.png"))
        masks = sorted((root / label / "masks").glob("*.png"))
        assert len(images) == len(masks) == (df.label == label).sum()
        assert [m.name for m in masks] == [i.name for i in images]
    for row in df.itertuples():
        name = Path(row.path).name
        assert re.fullmatch(rf"{re.escape(row.label)}-synpat\d{{4}}_\d\.png", name)
        assert row.path == f"COVID-19_Radiography_Dataset/{row.label}/images/{name}"
        assert row.lung_mask == f"COVID-19_Radiography_Dataset/{row.label}/masks/{name}"
        assert row.lesion_mask == f"COVID-19_Radiography_Dataset/lesion_masks/{row.label}/images/{name}"
        lung = _load(out / row.lung_mask)
        assert set(np.unique(lung)) == {0, 255}


@pytest.mark.parametrize("ds", ["binary_ds", "multi_ds"])
def test_lesion_masks_on_disk(ds, request):
    out, df = request.getfixturevalue(ds)
    for row in df.itertuples():
        lesion = _load(out / row.lesion_mask) > 0
        if row.label.lower() == "normal":
            assert not lesion.any()
            continue
        assert lesion.any()
        if row.lung_mask:
            lung = _load(out / row.lung_mask) > 0
            assert (lesion & lung).sum() / lesion.sum() > 0.9


def _lesion_contrast(label, task, difficulty, seeds=range(10)):
    """Mean over seeds of (mean lesion intensity - mean non-lesion intensity of the same lung)."""
    diffs = []
    for s in seeds:
        img, lesion, lung = make_image(label, task, s, 128, difficulty)
        comps, _ = ndimage.label(lung)
        c = np.bincount(comps[lesion]).argmax()
        rest = (comps == c) & ~lesion
        diffs.append(img[lesion].mean() - img[rest].mean())
    return float(np.mean(diffs))


@pytest.mark.parametrize("label,task", [("PNEUMONIA", "binary"), ("COVID", "multiclass"),
                                        ("Lung_Opacity", "multiclass"), ("Viral Pneumonia", "multiclass")])
def test_contrast_decreases_with_difficulty(label, task):
    easy, hard = _lesion_contrast(label, task, 0.0), _lesion_contrast(label, task, 1.0)
    assert easy > 10 and easy > 2 * hard


def test_learnable_at_difficulty_zero():
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import roc_auc_score
    from sklearn.model_selection import cross_val_score

    X, lung_mean, y = [], [], []
    for label in CLASSES["binary"]:
        for s in range(40):
            img, _, lung = make_image(label, "binary", 1000 + s, 64, 0.0)
            X.append(img.reshape(16, 4, 16, 4).mean((1, 3)).ravel() / 255)
            lung_mean.append(img[lung].mean())
            y.append(int(label == "PNEUMONIA"))
    assert roc_auc_score(y, lung_mean) > 0.75
    acc = cross_val_score(LogisticRegression(C=1.0, max_iter=2000), np.array(X), y, cv=4).mean()
    assert acc > 0.65


@pytest.mark.parametrize("kwargs,name", [
    (dict(task="foo"), "task"),
    (dict(difficulty=1.5), "difficulty"),
    (dict(difficulty=-0.1), "difficulty"),
    (dict(image_size=16), "image_size"),
    (dict(image_size=64.0), "image_size"),
    (dict(n_patients={"NORMAL": -1}), "n_patients"),
    (dict(n_patients={"COVID": 1}), "n_patients"),
    (dict(n_patients=-2), "n_patients"),
    (dict(images_per_patient=(0, 2)), "images_per_patient"),
    (dict(images_per_patient=(3, 1)), "images_per_patient"),
    (dict(test_fraction=1.0), "test_fraction"),
    (dict(seed=-1), "seed"),
])
def test_generate_bad_params(tmp_path, kwargs, name):
    args = dict(task="binary", n_patients=1, image_size=64) | kwargs
    with pytest.raises(ValueError, match=name):
        generate(tmp_path, args.pop("task"), **args)
    assert not (tmp_path / "chest_xray").exists()


@pytest.mark.parametrize("args,name", [
    (("PNEUMONIA", "multiclass", 0), "label"),
    (("NORMAL", "binary", -3), "rng_or_seed"),
    (("NORMAL", "bin", 0), "task"),
    (("NORMAL", "binary", 0, 31), "image_size"),
    (("NORMAL", "binary", 0, 64, 2), "difficulty"),
])
def test_make_image_bad_params(args, name):
    with pytest.raises(ValueError, match=name):
        make_image(*args)


def test_existing_dir_refused_unless_overwrite(tmp_path):
    kw = dict(n_patients=1, images_per_patient=1, image_size=32, seed=0)
    generate(tmp_path, "binary", **kw)
    stale = tmp_path / "chest_xray" / "stale.txt"
    stale.write_text("x")
    other = tmp_path / "keep.txt"
    other.write_text("y")
    with pytest.raises(FileExistsError, match="overwrite"):
        generate(tmp_path, "binary", **kw)
    df = generate(tmp_path, "binary", overwrite=True, **kw)
    assert not stale.exists() and other.exists() and len(df) == 2
    # an empty existing root is fine, and the other task's root is independent
    (tmp_path / "COVID-19_Radiography_Dataset").mkdir()
    assert len(generate(tmp_path, "multiclass", **kw)) == 4


def test_external_site_is_new_patients_through_another_acquisition(tmp_path):
    main = synthetic.generate(tmp_path, "binary", n_patients=4, image_size=48, seed=3)
    ext = synthetic.generate_external(tmp_path, n_patients=4, image_size=48, difficulty=0.5, seed=3, gamma=0.6,
                                      frame=0.1)
    assert set(ext["label"]) == {"NORMAL", "PNEUMONIA"} and ext["patient_id"].nunique() == 8
    assert all(p.startswith(f"{synthetic.EXTERNAL_ROOT}/{label}/") for p, label in zip(ext["path"], ext["label"]))
    pixels = {p: np.asarray(Image.open(tmp_path / p)) for p in ext["path"]}
    main_pixels = [np.asarray(Image.open(tmp_path / p)) for p in main["path"]]
    assert not any(np.array_equal(a, b) for a in pixels.values() for b in main_pixels)  # no image repeats
    for img in pixels.values():
        assert img[:5].max() == 0 and img[:, -5:].max() == 0  # the black frame (10 % of 48 px)
    again = synthetic.generate_external(tmp_path, n_patients=4, image_size=48, difficulty=0.5, seed=3, gamma=0.6,
                                        frame=0.1)
    assert again.equals(ext) and all(np.array_equal(np.asarray(Image.open(tmp_path / p)), pixels[p])
                                     for p in again["path"])  # same arguments, same files


def test_acquisition_shift_brightens_and_frames():
    img = np.full((20, 20), 64, np.uint8)
    out = synthetic.acquisition_shift(img, 0.5, 0.1)
    assert out[2:-2, 2:-2].min() == 128 and out[:2].max() == 0 and out[:, -2:].max() == 0
    with pytest.raises(ValueError, match="gamma > 0"):
        synthetic.acquisition_shift(img, 0.0, 0.1)
