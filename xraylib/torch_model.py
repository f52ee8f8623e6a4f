"""The four torchvision classifiers of the original COVID-19 radiography study.

=============  ==========================  ==========================================
name           torchvision builder         classifier replaced for N classes
=============  ==========================  ==========================================
densenet121    ``densenet121``             ``classifier = Linear(1024, N)``
resnet18       ``resnet18``                ``fc = Linear(512, N)``
resnet50       ``resnet50``                ``fc = Linear(2048, N)``
squeezenet     ``squeezenet1_0``           ``classifier[1] = Conv2d(512, N, 1)``
=============  ==========================  ==========================================

``squeezenet`` is SqueezeNet **1.0** (``squeezenet1_0``), the version of the
PyTorch fine-tuning tutorial the original follows; ``squeezenet1_1`` is accepted
too. N comes from the data: 4 (COVID-19 Radiography), 3 (``kermany3``), 2 (binary).

``weights`` is ``"imagenet"`` (torchvision's ``IMAGENET1K_V1`` weights, what
``pretrained=True`` loaded in the original; downloaded once into the torch hub
cache, so this needs internet the first time), ``"none"`` (random
initialisation) or the path of a local state dict (a torchvision ``.pth`` file or
a checkpoint written by :mod:`xraylib.torch_train`).

DenseNet's ``forward`` applies ``F.relu(features, inplace=True)`` after the
``features`` block, which overwrites the activations a Grad-CAM hook on
``features`` keeps. :func:`build_model` returns DenseNets whose final ReLU is
not in place (:class:`CamFriendlyDenseNet`; same parameters, same outputs).
"""

from __future__ import annotations

import re
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn
from torchvision import models
from torchvision.models import DenseNet

from xraylib import config, model_files

ARCHITECTURES = ("densenet121", "resnet18", "resnet50", "squeezenet")
BUILDERS = {
    "densenet121": "densenet121",
    "resnet18": "resnet18",
    "resnet50": "resnet50",
    "squeezenet": "squeezenet1_0",
    "squeezenet1_1": "squeezenet1_1",
}
WEIGHT_CHOICES = ("imagenet", "none", "<path to a state dict>")
_DENSENET_OLD_KEY = re.compile(
    r"^(.*denselayer\d+\.(?:norm|relu|conv))\.((?:[12])\.(?:weight|bias|running_mean|running_var))$")


class WeightsUnavailableError(FileNotFoundError):
    """The ImageNet weights are neither in the torch hub cache nor downloadable."""


class CamFriendlyDenseNet(DenseNet):
    """torchvision DenseNet whose final ReLU does not overwrite the ``features`` output.

    Identical parameters and outputs; only the in-place ReLU after ``features``
    becomes out-of-place so activations kept by hooks on ``features`` stay intact.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.features(x))
        out = F.adaptive_avg_pool2d(out, (1, 1))
        return self.classifier(torch.flatten(out, 1))


def check_arch(arch: str) -> str:
    """Return ``arch`` if known, else raise ``ValueError`` listing the choices."""
    if arch not in BUILDERS:
        raise ValueError(f"architecture must be one of {list(ARCHITECTURES)} (or squeezenet1_1), got {arch!r}")
    return arch


def imagenet_weights(arch: str) -> models.WeightsEnum:
    """torchvision's ImageNet weights enum of an architecture (``IMAGENET1K_V1``, as ``pretrained=True``)."""
    return models.get_model_weights(BUILDERS[check_arch(arch)])["IMAGENET1K_V1"]


def classifier_layer(model: nn.Module, arch: str) -> nn.Module:
    """The layer that maps features to class scores (what :func:`replace_classifier` swaps)."""
    arch = check_arch(arch)
    if arch == "densenet121":
        return model.classifier
    if arch.startswith("resnet"):
        return model.fc
    return model.classifier[1]


def replace_classifier(model: nn.Module, arch: str, num_classes: int) -> nn.Module:
    """Replace the ImageNet head with a freshly initialised ``num_classes`` head (in place; returns ``model``)."""
    arch = check_arch(arch)
    if isinstance(num_classes, bool) or int(num_classes) != num_classes or num_classes < 2:
        raise ValueError(f"num_classes must be an integer >= 2 (from the data's class folders), got {num_classes!r}")
    num_classes = int(num_classes)
    if arch == "densenet121":
        model.classifier = nn.Linear(model.classifier.in_features, num_classes)
    elif arch.startswith("resnet"):
        model.fc = nn.Linear(model.fc.in_features, num_classes)
    else:
        old = model.classifier[1]
        model.classifier[1] = nn.Conv2d(old.in_channels, num_classes, kernel_size=1, stride=1)
        model.num_classes = num_classes
    return model


def target_layer(model: nn.Module, arch: str) -> nn.Module:
    """The layer Grad-CAM should hook: ``layer4[-1]`` for ResNets, ``features`` for DenseNet and SqueezeNet."""
    arch = check_arch(arch)
    if arch.startswith("resnet"):
        return model.layer4[-1]
    return model.features


def _download_imagenet_state(arch: str) -> dict:
    """ImageNet state dict from the torch hub cache, downloading it if needed."""
    weights = imagenet_weights(arch)
    try:
        return weights.get_state_dict(progress=True, check_hash=True)
    except (OSError, RuntimeError, ValueError) as err:  # URLError, timeouts, HTTP and hash errors
        cache = Path(torch.hub.get_dir()) / "checkpoints"
        raise WeightsUnavailableError(
            f"could not load ImageNet weights for {arch!r} ({type(err).__name__}: {err}). They are downloaded "
            f"once from {weights.url} into {cache}, which needs internet access. Without it, set "
            f"train_multiclass.weights to the path of a local state dict (e.g. that .pth file copied from a "
            f"machine with internet, or a best.pt checkpoint) or to 'none' to train from scratch."
        ) from err


def _clean_state_dict(state: dict) -> dict:
    """Unwrap our checkpoints, strip ``module.`` (DataParallel) and map old DenseNet key names."""
    if "model_state" in state and isinstance(state["model_state"], dict):
        state = state["model_state"]
    elif "state_dict" in state and isinstance(state["state_dict"], dict):
        state = state["state_dict"]
    cleaned = {}
    for key, value in state.items():
        key = key[len("module."):] if key.startswith("module.") else key
        match = _DENSENET_OLD_KEY.match(key)
        cleaned[match.group(1) + match.group(2) if match else key] = value
    return cleaned


def load_state_into(model: nn.Module, arch: str, state: dict, source: str = "state dict") -> list[str]:
    """Load ``state`` into ``model``; a classifier of another class count is skipped (kept fresh).

    Returns:
        Names of the skipped classifier tensors (empty when the whole state was loaded).

    Raises:
        ValueError: the state does not fit the architecture (missing or unexpected backbone keys).
    """
    state = _clean_state_dict(state)
    own = model.state_dict()
    head = {name for name, _ in model.named_parameters() if name.startswith(("fc.", "classifier."))}
    skipped = [k for k in head if k in state and state[k].shape != own[k].shape]
    for key in skipped:
        state.pop(key)
    result = model.load_state_dict(state, strict=False)
    missing = [k for k in result.missing_keys if k not in skipped]
    if missing or result.unexpected_keys:
        raise ValueError(
            f"{source} does not fit architecture {arch!r}: {len(missing)} missing key(s) {missing[:3]} and "
            f"{len(result.unexpected_keys)} unexpected key(s) {result.unexpected_keys[:3]}; expected a state dict "
            f"of torchvision {BUILDERS[arch]}"
        )
    return sorted(skipped)


def build_model(arch: str, num_classes: int, weights: str | Path = "none") -> nn.Module:
    """A torchvision classifier with its head replaced for ``num_classes`` classes.

    Args:
        arch: one of :data:`ARCHITECTURES`.
        num_classes: classes in the data (>= 2).
        weights: ``"imagenet"``, ``"none"`` or the path of a local state dict. With
            ImageNet weights or a 1000-class state dict, the backbone is loaded and
            the new head is randomly initialised; a state dict with a head of the same
            size (e.g. our ``best.pt``) is loaded completely.

    Raises:
        ValueError: unknown architecture, bad class count or a state dict that does not fit;
            :class:`xraylib.model_files.ModelFileError` when the weights file is no PyTorch file
            (text, truncated, a pickle of other Python objects, ...).
        FileNotFoundError: the weights path does not exist.
        WeightsUnavailableError: ImageNet weights cannot be downloaded (offline).
    """
    arch = check_arch(arch)
    model = models.get_model(BUILDERS[arch], weights=None)
    if arch == "densenet121":
        model.__class__ = CamFriendlyDenseNet
    weights_name = str(weights)
    if weights_name == "imagenet":
        load_state_into(model, arch, _download_imagenet_state(arch), f"ImageNet weights of {arch}")
        replace_classifier(model, arch, num_classes)
    elif weights_name == "none":
        replace_classifier(model, arch, num_classes)
    else:
        path = Path(weights_name).expanduser()
        if not path.is_absolute():
            path = config.resolve(path)
        if not path.exists():
            raise FileNotFoundError(
                f"train_multiclass.weights: expected 'imagenet', 'none' or an existing state-dict file, "
                f"got {weights_name!r} ({path} does not exist)")
        if not path.is_file():
            raise model_files.not_a_model(path, model_files.TORCH_STATE_DICT)
        replace_classifier(model, arch, num_classes)
        # weights_only: a pickle payload is refused, never run; a bad file gives one line (ModelFileError).
        state = model_files.torch_load(lambda: torch.load(path, map_location="cpu", weights_only=True), path,
                                       model_files.TORCH_STATE_DICT)
        if not isinstance(state, dict):
            raise model_files.ModelFileError(
                f"weights file {path} holds a {type(state).__name__}, expected a state dict")
        load_state_into(model, arch, state, f"weights file {path}")
    return model


def count_parameters(model: nn.Module) -> int:
    """Number of trainable parameters."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


REQUIRED_KEYS = ("arch", "class_names", "image_size", "resize", "equalize", "model_state")


def load_checkpoint(path: str | Path, device: str | torch.device = "cpu") -> tuple[nn.Module, dict]:
    """Rebuild a trained model from ``best.pt`` / ``last.pt``; returns ``(model in eval mode, metadata)``.

    Raises:
        FileNotFoundError: the file does not exist.
        ModelFileError: (a ``ValueError``) the file is not a checkpoint written by :mod:`xraylib.torch_train`:
            one line saying what it is (text, truncated, a pickle of other Python objects, ...).
    """
    path = config.resolve(path)
    if not path.exists():
        raise FileNotFoundError(f"checkpoint {path} not found; train it with `xraylib notebook train_multiclass`")
    if not path.is_file():
        raise model_files.not_a_model(path, model_files.TORCH_CHECKPOINT)
    # weights_only: a pickle payload is refused, never run; a bad file gives one line (ModelFileError).
    state = model_files.torch_load(lambda: torch.load(path, map_location="cpu", weights_only=True), path,
                                   model_files.TORCH_CHECKPOINT)
    missing = [k for k in REQUIRED_KEYS if not isinstance(state, dict) or k not in state]
    if missing:
        raise model_files.ModelFileError(
            f"{path} is not an xraylib PyTorch checkpoint: missing {missing}; expected best.pt written by "
            "xraylib.torch_train (a bare state dict has no class names or image settings)")
    model = build_model(state["arch"], len(state["class_names"]), "none")
    try:
        model.load_state_dict(state["model_state"])
    except (RuntimeError, TypeError, AttributeError) as err:  # tensors of other shapes or names
        raise model_files.ModelFileError(
            f"'{path}' is a PyTorch checkpoint whose weights do not fit its architecture {state['arch']!r} "
            f"({model_files.one_line(err)}); expected {model_files.TORCH_CHECKPOINT}") from None
    model.to(device).eval()
    meta = {k: v for k, v in state.items() if k not in ("model_state", "optimizer_state", "scheduler_state",
                                                          "scaler_state", "rng")}
    return model, meta
