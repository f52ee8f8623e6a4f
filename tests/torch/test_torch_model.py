"""Architectures: classifier replacement, Grad-CAM target layers and weight loading (offline)."""

from __future__ import annotations

import urllib.error

import pytest
import torch
from torch import nn

from xraylib import torch_model
from xraylib.torch_model import WeightsUnavailableError, build_model, classifier_layer, target_layer

EXPECTED_HEAD = {"densenet121": (nn.Linear, 1024), "resnet18": (nn.Linear, 512), "resnet50": (nn.Linear, 2048),
                 "squeezenet": (nn.Conv2d, 512), "efficientnet_lite0": (nn.Linear, 1280), "xception": (nn.Linear, 2048)}


@pytest.mark.parametrize("arch", torch_model.ARCHITECTURES)
@pytest.mark.parametrize("num_classes", [2, 3, 4])
def test_classifier_is_replaced_for_the_data_classes(arch, num_classes):
    torch.manual_seed(0)
    model = build_model(arch, num_classes).eval()
    head = classifier_layer(model, arch)
    kind, inputs = EXPECTED_HEAD[arch]
    assert isinstance(head, kind)
    assert (head.out_features if kind is nn.Linear else head.out_channels) == num_classes
    assert (head.in_features if kind is nn.Linear else head.in_channels) == inputs
    with torch.no_grad():
        assert model(torch.randn(2, 3, 64, 64)).shape == (2, num_classes)


def test_squeezenet_is_version_1_0():
    model = build_model("squeezenet", 4)
    assert model.features[0].kernel_size == (7, 7)  # 1.0 starts with a 7x7 conv (1.1: 3x3)
    assert model.num_classes == 4
    assert build_model("squeezenet1_1", 4).features[0].kernel_size == (3, 3)


@pytest.mark.parametrize("arch,kind", [("resnet18", "BasicBlock"), ("resnet50", "Bottleneck"),
                                       ("densenet121", "Sequential"), ("squeezenet", "Sequential"),
                                       ("efficientnet_lite0", "BatchNormAct2d"), ("xception", "ReLU")])
def test_target_layer(arch, kind):
    model = build_model(arch, 3)
    layer = target_layer(model, arch)
    assert type(layer).__name__ == kind
    expected = {"efficientnet_lite0": lambda m: m.backbone.bn2, "xception": lambda m: m.backbone.act4}.get(
        arch, lambda m: m.layer4[-1] if arch.startswith("resnet") else m.features)
    assert layer is expected(model)
    assert torch_model.target_layer_name(arch) in ("layer4[-1]", "features", "backbone.bn2", "backbone.act4")


def test_densenet_features_are_not_overwritten_in_place():
    """A hook on DenseNet ``features`` must keep the pre-ReLU activations Grad-CAM needs."""
    torch.manual_seed(0)
    model = build_model("densenet121", 3).eval()
    kept = {}
    handle = target_layer(model, "densenet121").register_forward_hook(
        lambda module, inputs, output: kept.update(output=output, copy=output.detach().clone()))
    x = torch.randn(1, 3, 64, 64, requires_grad=True)
    model(x).sum().backward()  # backward through a hooked, untouched activation works
    handle.remove()
    assert torch.equal(kept["output"].detach(), kept["copy"])
    assert (kept["copy"] < 0).any(), "norm5 output still has negative values (no ReLU applied in place)"


def test_unknown_architecture_and_bad_class_count():
    with pytest.raises(ValueError, match="architecture must be one of"):
        build_model("vgg16", 4)
    with pytest.raises(ValueError, match="num_classes must be an integer >= 2"):
        build_model("resnet18", 1)


def test_imagenet_weights_offline_fail_with_a_clear_message(tmp_path, monkeypatch):
    calls = []

    def offline(url, *args, **kwargs):
        calls.append(url)
        raise urllib.error.URLError("Name or service not known")

    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path))  # empty cache: a download is needed
    monkeypatch.setattr(torch.hub, "download_url_to_file", offline)
    with pytest.raises(WeightsUnavailableError) as info:
        build_model("resnet18", 4, "imagenet")
    message = str(info.value)
    assert calls and calls[0].startswith("https://download.pytorch.org/models/resnet18")
    assert "internet" in message and "'none'" in message and "local state dict" in message
    assert isinstance(info.value, FileNotFoundError)  # the CLI reports it as a clean error


def test_imagenet_weights_load_from_the_hub_cache(tmp_path, monkeypatch):
    """With the file in the torch hub cache (a user's second run) no network is needed."""
    torch.manual_seed(1)
    reference = build_model("resnet18", 1000)
    weights = torch_model.imagenet_weights("resnet18")
    cache = tmp_path / "checkpoints"
    cache.mkdir()
    torch.save(reference.state_dict(), cache / weights.url.rsplit("/", 1)[-1])
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path))
    monkeypatch.setattr(torch.hub, "download_url_to_file", lambda *a, **k: pytest.fail("no download expected"))
    monkeypatch.setattr(weights.__class__, "get_state_dict",
                        lambda self, *a, **k: torch.hub.load_state_dict_from_url(self.url, check_hash=False))
    model = build_model("resnet18", 3, "imagenet")
    assert torch.equal(model.conv1.weight, reference.conv1.weight)
    assert model.fc.out_features == 3


def test_local_state_dict_loads_backbone_and_keeps_new_head(tmp_path):
    torch.manual_seed(2)
    imagenet_like = build_model("densenet121", 1000)
    path = tmp_path / "densenet121.pth"
    state = imagenet_like.state_dict()
    # torchvision's original DenseNet files use old key names ("norm.1") and predate num_batches_tracked.
    old = {k.replace("norm1.", "norm.1.").replace("conv1.", "conv.1."): v for k, v in state.items()
           if not k.endswith("num_batches_tracked")}
    torch.save({f"module.{k}": v for k, v in old.items()}, path)
    model = build_model("densenet121", 3, path)
    assert torch.equal(model.features.conv0.weight, imagenet_like.features.conv0.weight)
    assert torch.equal(model.features.denseblock1.denselayer1.norm1.weight,
                       imagenet_like.features.denseblock1.denselayer1.norm1.weight)
    assert model.classifier.out_features == 3


def test_local_state_dict_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="expected 'imagenet', 'none' or an existing state-dict file"):
        build_model("resnet18", 3, tmp_path / "missing.pth")
    path = tmp_path / "squeeze.pth"
    torch.save(build_model("squeezenet", 3).state_dict(), path)
    with pytest.raises(ValueError, match="does not fit architecture 'resnet18'"):
        build_model("resnet18", 3, path)
