"""Fine-tuning torchvision classifiers on the multi-class manifest (notebook 04).

The recipe of the original COVID-19 radiography study: cross-entropy, Adam
(learning rate 1e-4), a fixed number of epochs and optionally ``StepLR``
(x0.1 every 3 epochs). The original trains DenseNet121 and ResNet18 with and
without the scheduler, ResNet50 and SqueezeNet without: six runs, listed in
``params.yaml`` ``train_multiclass.runs`` and built by :func:`build_configs`.

What :func:`train` adds to the original loop:

* ``train()``/``eval()`` modes and ``torch.no_grad()`` for validation;
* ``best.pt`` whenever the validation loss improves: weights plus everything
  needed to rebuild the model elsewhere (architecture, class names, image size,
  resize and equalisation settings, normalisation);
* ``last.pt`` after every epoch with the optimizer, scheduler, AMP scaler, the
  torch / NumPy / ``random`` RNG states, the DataLoader generator and the
  history, so a run killed at any point resumes from its last finished epoch
  and ends with exactly the weights an uninterrupted run would have. It lives
  in a checkpoint folder (``train_multiclass.checkpoint_dir``, by default
  ``.cache/checkpoints/multiclass/<run>/``) outside the DVC outputs, because DVC
  deletes a stage's outputs before it runs the stage; a copy of ``best.pt`` is
  kept there too. A checkpoint is resumed only when the run settings, the data
  and the training code (:func:`code_fingerprint`) are the same;
* ``history.csv`` (loss, accuracy, validation loss and accuracy, learning rate);
* CUDA with mixed precision when a GPU is present, deterministic algorithms and
  fixed seeds on the CPU. Bit-identical CPU results also need the same number of
  torch threads (``num_threads``): floating-point sums are split by thread.

CPU speed-ups and recipe options (all off in the default study, so its figures stay
those of the original recipe; each measured in ``benchmarks/torch_cpu_recipe.py``):

* ``channels_last``: NHWC tensors, which oneDNN convolutions prefer on CPUs;
* ``cpu_bfloat16``: bfloat16 autocast on the CPU (fast only where the CPU has
  bfloat16 instructions, e.g. AVX-512 BF16 / AMX);
* ``lr_schedule``: ``constant`` (the original), ``onecycle`` (Smith & Topin 2017)
  or ``cosine`` (cosine decay to 0), stepped after every batch; a run with
  ``step_lr: true`` always uses the original's ``StepLR``;
* ``label_smoothing`` of the cross-entropy (Szegedy et al. 2016);
* ``progressive_resizing``: image sizes of the first epochs (e.g. ``[128]``:
  epoch 1 at 128 px, the rest at ``image_size``), cheap early epochs on small images
  (fast.ai's progressive resizing; Touvron et al. 2019 on the train/test resolution);
* ``augment``: ``flip`` (the original) or ``radiograph`` (flip plus a small affine
  and exposure jitter, :func:`xraylib.torch_data.build_transform`).

Outside the pipeline, notebook 04 is the one route (any manifest folder, outputs
kept away from the project's)::

    xraylib --set train_multiclass.manifest_dir=/tmp/k3 notebook train_multiclass --out /tmp/k3/runs
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import os
import random
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Mapping, Sequence

import numpy as np
import pandas as pd
import torch
from torch import nn
from tqdm import tqdm

from xraylib import config, numerics, outputs, schema, torch_distributed
from xraylib.data import class_names as manifest_class_names
from xraylib.torch_data import (AUGMENTATIONS, IMAGENET_MEAN, IMAGENET_STD, ManifestDataset, keep_decoded,
                                 make_generator, make_loader)
from xraylib.torch_model import build_model, check_arch

log = logging.getLogger(__name__)
CHECKPOINT_FORMAT = "xraylib-torch-classifier-1"
HISTORY_COLUMNS = ["epoch", "loss", "accuracy", "val_loss", "val_accuracy", "lr"]
# train_multiclass keys that are not settings of a single run.
STUDY_KEYS = ("manifest_dir", "model_dir", "checkpoint_dir", "resume", "eval_batch_size", "n_resamples", "seeds",
              "recalibration", "runs")
RUN_KEYS = ("arch", "step_lr")  # required keys of each train_multiclass.runs entry (its name is the key)
LR_SCHEDULES = ("constant", "onecycle", "cosine")
DATA_KEYS = ("resize", "equalize")  # from the shared data section
NO_RESULT_KEYS = ("image_cache_mb",)  # settings that change speed or memory only, never what a run computes


@dataclass(frozen=True)
class RunConfig:
    """Settings of one training run: one entry of ``train_multiclass.runs`` plus the shared settings.

    Every field is required: params.yaml is the one source of values (``name``, ``arch``,
    ``step_lr`` from the run entry, which may also set its own ``learning_rate``; ``resize``
    and ``equalize`` from ``data``; ``seed`` from the top level; the rest from
    ``train_multiclass``). Build them with :func:`configs_from_params`, or
    :func:`build_configs` with :func:`shared_settings` and explicit overrides.
    """

    name: str
    arch: str
    step_lr: bool
    epochs: int
    batch_size: int
    learning_rate: float
    step_size: int
    gamma: float
    weights: str
    weighted_sampler: bool
    num_workers: int
    image_size: int
    resize: str
    equalize: str
    seed: int
    device: str
    mixed_precision: bool
    num_threads: int
    precise_bn: bool
    lr_schedule: str
    label_smoothing: float
    channels_last: bool
    cpu_bfloat16: bool
    progressive_resizing: list[int]
    augment: str
    image_cache_mb: int

    def __post_init__(self):
        check_arch(self.arch)
        if self.augment not in AUGMENTATIONS:
            raise ValueError(f"train_multiclass.augment must be one of {AUGMENTATIONS}, got {self.augment!r}")
        if self.lr_schedule not in LR_SCHEDULES:
            raise ValueError(f"train_multiclass.lr_schedule must be one of {LR_SCHEDULES}, got {self.lr_schedule!r}")
        if isinstance(self.label_smoothing, bool) or not isinstance(self.label_smoothing, (int, float)) \
                or not 0 <= self.label_smoothing < 1:
            raise ValueError(f"train_multiclass.label_smoothing must be a number in [0, 1), got {self.label_smoothing!r}")
        if not isinstance(self.progressive_resizing, (list, tuple)):
            raise ValueError(f"train_multiclass.progressive_resizing must be a list of image sizes, "
                             f"got {self.progressive_resizing!r}")
        for size in self.progressive_resizing:
            if isinstance(size, bool) or not isinstance(size, int) or size < 32:
                raise ValueError(f"train_multiclass.progressive_resizing must list image sizes >= 32, "
                                 f"got {list(self.progressive_resizing)!r}")
        if len(self.progressive_resizing) >= self.epochs:
            raise ValueError(f"train_multiclass.progressive_resizing sets the size of the first "
                             f"{len(self.progressive_resizing)} epochs; at least the last of the {self.epochs} epochs "
                             f"must train at image_size {self.image_size}")
        for key in ("epochs", "batch_size", "step_size"):
            value = getattr(self, key)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"train_multiclass.{key} must be an integer >= 1, got {value!r}")
        for key in ("learning_rate", "gamma"):
            value = getattr(self, key)
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise ValueError(f"train_multiclass.{key} must be a number (write 0.0001, not 1e-4, in YAML), "
                                 f"got {value!r}")
        if not self.learning_rate > 0:
            raise ValueError(f"train_multiclass.learning_rate must be > 0, got {self.learning_rate!r}")
        if not 0 < self.gamma <= 1:
            raise ValueError(f"train_multiclass.gamma must lie in (0, 1], got {self.gamma!r}")
        if isinstance(self.image_cache_mb, bool) or not isinstance(self.image_cache_mb, int) \
                or self.image_cache_mb < 0:
            raise ValueError(f"train_multiclass.image_cache_mb must be an integer >= 0 (0 = decode every epoch), "
                             f"got {self.image_cache_mb!r}")
        if isinstance(self.num_threads, bool) or not isinstance(self.num_threads, int) or self.num_threads < 0:
            raise ValueError(f"train_multiclass.num_threads must be an integer >= 0 (0 = torch's default), "
                             f"got {self.num_threads!r}")
        if self.device not in ("auto", "cpu", "cuda") and not str(self.device).startswith("cuda:"):
            raise ValueError(f"train_multiclass.device must be auto, cpu or cuda[:N], got {self.device!r}")

    def result_settings(self) -> dict:
        """The settings that decide what the run computes: all but :data:`NO_RESULT_KEYS`."""
        return {k: v for k, v in dataclasses.asdict(self).items() if k not in NO_RESULT_KEYS}

    def resume_key(self) -> dict:
        """Settings a checkpoint must share to be resumed (:meth:`result_settings` but ``epochs``, which may grow)."""
        return {k: v for k, v in self.result_settings().items() if k != "epochs"}


@dataclass
class TrainResult:
    """What :func:`train` returns for one run."""

    config: RunConfig
    out_dir: Path
    history: pd.DataFrame
    best_epoch: int
    best_val_loss: float
    class_names: list[str]
    resumed_from_epoch: int = 0
    extra: dict = field(default_factory=dict)
    checkpoint_dir: Path | None = None

    @property
    def best_path(self) -> Path:
        return self.out_dir / "best.pt"

    @property
    def last_path(self) -> Path:
        return (self.checkpoint_dir or self.out_dir) / "last.pt"


def _dotted(key: str, name: str) -> str:
    """Where a RunConfig field comes from in params.yaml, as a dotted key."""
    if key in RUN_KEYS:
        return f"train_multiclass.runs.{name}.{key}"
    if key in DATA_KEYS:
        return f"data.{key}"
    return "seed" if key == "seed" else f"train_multiclass.{key}"


def build_configs(runs: Mapping[str, dict], names: Sequence[str] | None = None, **common) -> list[RunConfig]:
    """Turn ``train_multiclass.runs`` (a mapping ``{run name: {arch, step_lr, ...}}``) into :class:`RunConfig` objects.

    Args:
        runs: run entries by name; ``arch`` and ``step_lr`` are required, any other key overrides ``common``.
        names: runs to keep, in the order of ``runs`` (``xraylib train-multiclass --only``); empty or ``None``
            keeps all.
        **common: the shared settings, all of them (:func:`shared_settings` gives them from
            params.yaml; a caller overrides what it changes, e.g. ``epochs``).

    Raises:
        ValueError: not a mapping of mappings, unknown ``names``, an unknown setting (with the closest valid key) or a
            missing one (named as its dotted params.yaml key).
    """
    allowed = [f.name for f in dataclasses.fields(RunConfig)]
    unknown = [key for key in common if key not in allowed]
    if unknown:
        raise ValueError("\n".join(f"train_multiclass.{key}: unknown key; {schema.suggestion(key, sorted(allowed))}"
                                    for key in unknown))
    if not isinstance(runs, Mapping):
        raise ValueError(f"train_multiclass.runs must be a mapping of run name -> settings, got {runs!r}")
    configs = []
    for name, entry in runs.items():
        if not isinstance(entry, Mapping) or entry.get("arch") is None:
            raise ValueError(f"train_multiclass.runs.{name} must be a mapping with 'arch' and 'step_lr', got {entry!r}")
        # A per-run key set to null (the schema allows it for learning_rate) means the shared value.
        entry = {k: v for k, v in entry.items() if v is not None}
        extra = [key for key in entry if key not in allowed or key == "name"]
        if extra:
            raise ValueError("\n".join(f"train_multiclass.runs.{name}.{key}: unknown key; "
                                        f"{schema.suggestion(key, sorted(allowed))}" for key in extra))
        values = {**common, **entry, "name": str(name)}
        missing = [key for key in allowed if key not in values]
        if missing:
            raise ValueError("\n".join(f"{_dotted(key, name)}: missing (params.yaml must define it)"
                                        for key in missing))
        configs.append(RunConfig(**values))
    wanted = list(names or [])
    missing_names = [n for n in wanted if n not in runs]
    if missing_names:
        raise ValueError(f"runs {missing_names} are not in train_multiclass.runs {list(runs)}")
    return [c for c in configs if not wanted or c.name in wanted]


def shared_settings(params: dict) -> dict:
    """The shared keyword arguments of :func:`build_configs` from a whole (validated) params dict.

    ``train_multiclass`` without :data:`STUDY_KEYS`, ``data.resize``, ``data.equalize`` and ``seed``.
    """
    spec = config.section(params, "train_multiclass")
    data_spec = config.section(params, "data")
    settings = {key: value for key, value in spec.items() if key not in STUDY_KEYS}
    return {**settings, **{key: data_spec[key] for key in DATA_KEYS}, "seed": params["seed"]}


def configs_from_params(params: dict, names: Sequence[str] | None = None) -> list[RunConfig]:
    """:func:`build_configs` from a whole params dict (``train_multiclass``, ``data`` and ``seed``)."""
    return build_configs(config.section(params, "train_multiclass")["runs"], names, **shared_settings(params))


def settings_table(configs: Sequence[RunConfig]) -> pd.DataFrame:
    """One row per run: what it trains and how (architecture, weights, image size, epochs, schedule, ...)."""
    rows = []
    for cfg in configs:
        weights = cfg.weights if cfg.weights in ("none", "imagenet") else Path(cfg.weights).name
        rows.append({"run": cfg.name, "arch": cfg.arch, "weights": weights, "image_size": cfg.image_size,
                     "progressive_resizing": list(cfg.progressive_resizing) or "", "epochs": cfg.epochs,
                     "batch_size": cfg.batch_size, "learning_rate": cfg.learning_rate,
                     "schedule": f"StepLR every {cfg.step_size} x{cfg.gamma:g}" if cfg.step_lr else cfg.lr_schedule,
                     "label_smoothing": cfg.label_smoothing, "augment": cfg.augment})
    return pd.DataFrame(rows).set_index("run")


def select_device(name: str = "auto") -> torch.device:
    """``cuda`` when asked for or (``auto``) when available, else ``cpu``.

    Raises:
        ValueError: ``cuda`` requested but no GPU is visible.
    """
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if str(name).startswith("cuda") and not torch.cuda.is_available():
        raise ValueError(f"train_multiclass.device is {name!r} but no CUDA GPU is available; use 'auto' or 'cpu'")
    return torch.device(name)


def set_determinism(seed: int, device: torch.device) -> None:
    """Seed ``random``, NumPy and torch and ask torch for deterministic algorithms.

    Exact on the CPU. On CUDA some kernels have no deterministic version; torch
    then warns instead of failing (``warn_only``) and cuDNN autotuning is off.
    """
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    if device.type == "cuda":
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.backends.cudnn.benchmark = False
        torch.use_deterministic_algorithms(True, warn_only=True)
    else:
        torch.use_deterministic_algorithms(True)


def rng_state(generator: torch.Generator) -> dict:
    """All random states a resumed run needs (tensors and plain values only, loadable with ``weights_only``)."""
    np_state = np.random.get_state()
    py_version, py_internal, py_gauss = random.getstate()
    return {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        "numpy": {"name": np_state[0], "keys": torch.from_numpy(np_state[1].astype(np.int64)),
                  "pos": int(np_state[2]), "has_gauss": int(np_state[3]), "cached_gaussian": float(np_state[4])},
        "random": {"version": py_version, "internal": list(py_internal), "gauss": py_gauss},
        "generator": generator.get_state(),
    }


def restore_rng_state(state: dict, generator: torch.Generator) -> None:
    """Inverse of :func:`rng_state`."""
    torch.set_rng_state(state["torch"])
    if state["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
    n = state["numpy"]
    np.random.set_state((n["name"], n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"],
                         n["cached_gaussian"]))
    r = state["random"]
    random.setstate((r["version"], tuple(r["internal"]), r["gauss"]))
    generator.set_state(state["generator"])


def data_fingerprint(manifest: pd.DataFrame, class_names: Sequence[str],
                     splits: Sequence[str] = ("train", "val")) -> str:
    """Hash of the images of ``splits`` (path, label, split, file hash) and the class order; by default the
    training and validation images, what training reads."""
    used = manifest[manifest["split"].isin(tuple(splits))]
    digest = hashlib.sha256(json.dumps(list(class_names)).encode())
    for row in used[["path", "label", "split", "sha256"]].itertuples(index=False):
        digest.update("|".join(map(str, row)).encode() + b"\n")
    return digest.hexdigest()


# Modules whose code decides what training computes; a checkpoint written by other code is not resumed.
TRAINING_MODULES = ("xraylib.torch_train", "xraylib.torch_data", "xraylib.torch_model", "xraylib.torch_pretrained",
                    "xraylib.images", "xraylib.torch_distributed")


def code_fingerprint() -> str:
    """Hash of the training code (the source of :data:`TRAINING_MODULES`) and the torch version."""
    import importlib

    digest = hashlib.sha256(torch.__version__.encode())
    for name in TRAINING_MODULES:
        digest.update(Path(importlib.import_module(name).__file__).read_bytes())
    return digest.hexdigest()


def _save_atomic(obj: dict, path: Path) -> None:
    """``torch.save`` to a temporary file, then rename: a kill never leaves half a checkpoint."""
    tmp = path.with_name(path.name + ".tmp")
    torch.save(obj, tmp)
    os.replace(tmp, path)


def _copy_atomic(source: Path, target: Path) -> None:
    import shutil

    tmp = target.with_name(target.name + ".tmp")
    shutil.copyfile(source, tmp)
    os.replace(tmp, target)


def _load_resume_state(path: Path, name: str) -> dict | None:
    """The resume checkpoint, or ``None`` when it cannot be read.

    A truncated, corrupt or unsafe ``last.pt`` (a pickle payload is refused, never run) is
    renamed ``last.pt.unreadable``, its bytes untouched, with a one-line warning naming the
    file and what it is; training then starts over.
    """
    from xraylib import model_files

    try:
        state = model_files.torch_load(lambda: torch.load(path, map_location="cpu", weights_only=True), path,
                                       model_files.TORCH_RESUME)
    except model_files.ModelFileError as err:  # truncated zip, pickle payload, foreign file: cannot resume
        reason = str(err)
    else:
        if isinstance(state, dict) and "epoch" in state:
            return state
        reason = str(model_files.not_a_model(path, model_files.TORCH_RESUME, "a PyTorch file without an epoch"))
    aside = path.with_name(path.name + ".unreadable")
    os.replace(path, aside)
    log.warning("%s: cannot resume from %s: %s; moved it to %s and training afresh", name, path.name, reason,
                aside.name)
    return None


def model_metadata(cfg: RunConfig, class_names: Sequence[str], data_source: str = "") -> dict:
    """What a checkpoint carries so :func:`xraylib.torch_model.load_checkpoint` can rebuild the model.

    ``data_source`` (the manifest's source, e.g. ``synthetic`` or ``covid_radiography``)
    lets ``xraylib predict``/``evaluate`` warn when a demo model meets real images.
    """
    return {
        "format": CHECKPOINT_FORMAT,
        "data_source": data_source,
        "arch": cfg.arch,
        "class_names": list(class_names),
        "image_size": cfg.image_size,
        "resize": cfg.resize,
        "equalize": cfg.equalize,
        "mean": list(IMAGENET_MEAN),
        "std": list(IMAGENET_STD),
        "run": dataclasses.asdict(cfg),
    }


@dataclass(frozen=True)
class Numerics:
    """How tensors are computed: autocast (enabled, dtype) and memory format."""

    autocast: bool = False
    dtype: torch.dtype = torch.float16
    channels_last: bool = False

    def input(self, x: torch.Tensor, device: torch.device) -> torch.Tensor:
        x = x.to(device, non_blocking=True)
        return x.contiguous(memory_format=torch.channels_last) if self.channels_last else x

    def context(self, device: torch.device):
        return torch.autocast(device_type=device.type, dtype=self.dtype, enabled=self.autocast)


def numerics_for(cfg: RunConfig, device: torch.device) -> Numerics:
    """float16 autocast on CUDA with ``mixed_precision``; bfloat16 autocast on the CPU with ``cpu_bfloat16``."""
    if device.type == "cuda":
        return Numerics(bool(cfg.mixed_precision), torch.float16, cfg.channels_last)
    return Numerics(bool(cfg.cpu_bfloat16), torch.bfloat16, cfg.channels_last)


def make_scheduler(cfg: RunConfig, optimizer: torch.optim.Optimizer, steps_per_epoch: int):
    """``(scheduler, per_batch)``: the original's StepLR (per epoch) for ``step_lr`` runs, else ``lr_schedule``."""
    if cfg.step_lr:
        return torch.optim.lr_scheduler.StepLR(optimizer, step_size=cfg.step_size, gamma=cfg.gamma), False
    total = cfg.epochs * steps_per_epoch
    if cfg.lr_schedule == "onecycle":
        return torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=cfg.learning_rate, total_steps=total,
                                                   pct_start=0.15), True
    if cfg.lr_schedule == "cosine":
        return torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=total), True
    return None, False


def image_size_at(cfg: RunConfig, epoch: int) -> int:
    """Training image size of ``epoch`` (1-based): ``progressive_resizing`` first, then ``image_size``."""
    sizes = cfg.progressive_resizing
    return int(sizes[epoch - 1]) if epoch <= len(sizes) else int(cfg.image_size)


def train_one_epoch(model: nn.Module, loader, criterion: nn.Module, optimizer: torch.optim.Optimizer,
                    scaler: torch.amp.GradScaler, device: torch.device, *, amp: bool | Numerics = False,
                    epoch: int = 0, on_batch_end: Callable[[int, int], None] | None = None, show: bool = False,
                    desc: str = "", batch_scheduler=None,
                    ctx: torch_distributed.Context | None = None) -> tuple[float, float]:
    """One pass over ``loader`` in training mode. Returns ``(mean loss, accuracy)`` (over every process of a
    distributed run, ``ctx``).

    ``amp`` is a :class:`Numerics` (or ``True`` for float16 autocast); ``batch_scheduler``
    is stepped after every optimizer step. ``on_batch_end(epoch, batch_index)`` is called
    after every optimizer step (tests use it to interrupt a run mid-epoch).
    """
    numerics_ = amp if isinstance(amp, Numerics) else Numerics(bool(amp))
    model.train()
    total, correct, seen = 0.0, 0, 0
    for i, (x, y) in enumerate(tqdm(loader, desc=desc, disable=not show, leave=False)):
        x, y = numerics_.input(x, device), y.to(device, non_blocking=True)
        optimizer.zero_grad(set_to_none=True)
        with numerics_.context(device):
            logits = model(x)
            loss = criterion(logits.float(), y)
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        scaler.update()
        if batch_scheduler is not None:
            batch_scheduler.step()
        total += float(loss.detach()) * len(y)
        correct += int((logits.detach().argmax(1) == y).sum())
        seen += len(y)
        if on_batch_end is not None:
            on_batch_end(epoch, i)
    if ctx is not None and ctx.distributed:
        total, correct, seen = ctx.sum([total, correct, seen])
    return total / seen, correct / seen


def recompute_batchnorm(model: nn.Module, loader, device: torch.device, *, amp: bool | Numerics = False) -> int:
    """Precise BatchNorm: replace the running statistics by the exact mean/variance over ``loader``.

    During training each BatchNorm layer keeps an exponential moving average of
    batch statistics, which lags behind weights that change quickly (constant,
    high learning rates from scratch): the model then validates and tests with
    statistics of older weights, and its predictions swing from epoch to epoch.
    Recomputing them with the current weights over the training images
    (unaugmented, in a fixed order) removes that lag (Wu & Johnson, "Rethinking
    'Batch' in BatchNorm", 2021). Returns the number of BatchNorm layers updated.
    """
    layers = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.track_running_stats]
    if not layers:
        return 0
    numerics_ = amp if isinstance(amp, Numerics) else Numerics(bool(amp))
    momenta = [m.momentum for m in layers]
    was_training = model.training
    for m in layers:
        m.reset_running_stats()
        m.momentum = None  # cumulative average over all batches
    model.train()
    with torch.no_grad():
        for x, _ in loader:
            with numerics_.context(device):
                model(numerics_.input(x, device))
    for m, momentum in zip(layers, momenta):
        m.momentum = momentum
    model.train(was_training)
    return len(layers)


def evaluate_loss(model: nn.Module, loader, criterion: nn.Module, device: torch.device, *,
                  amp: bool | Numerics = False) -> tuple[float, float]:
    """Mean loss and accuracy over ``loader`` in eval mode without gradients."""
    numerics_ = amp if isinstance(amp, Numerics) else Numerics(bool(amp))
    model.eval()
    total, correct, seen = 0.0, 0, 0
    with torch.no_grad():
        for x, y in loader:
            x, y = numerics_.input(x, device), y.to(device, non_blocking=True)
            with numerics_.context(device):
                logits = model(x)
                loss = criterion(logits.float(), y)
            total += float(loss) * len(y)
            correct += int((logits.argmax(1) == y).sum())
            seen += len(y)
    return total / seen, correct / seen


def _epoch_line(name: str, row: dict, epochs: int, best: bool) -> str:
    return (f"{name:<20s} epoch {int(row['epoch']):>3d}/{epochs}: loss {row['loss']:.4f} acc {row['accuracy']:.4f} "
            f"| val_loss {row['val_loss']:.4f} val_acc {row['val_accuracy']:.4f} | lr {row['lr']:.0e}"
            f"{'  *best' if best else ''}")


def train(cfg: RunConfig, manifest: pd.DataFrame, out_dir: str | Path, *, class_names: Sequence[str] | None = None,
          resume: bool = True, checkpoint_dir: str | Path | None = None,
          on_batch_end: Callable[[int, int], None] | None = None,
          batch_progress: bool = False, verbose: bool = True, data_source: str = "") -> TrainResult:
    """Train one run on the manifest's train split, validating on its val split.

    Args:
        cfg: run settings.
        manifest: manifest with patient-level ``split`` column.
        out_dir: run folder for ``best.pt`` and ``history.csv``.
        class_names: class order; default the sorted labels of ``manifest``.
        resume: continue from ``checkpoint_dir/last.pt`` when it was written with the same
            settings, data and code (a finished run is then just reloaded); ``False`` starts afresh.
        checkpoint_dir: folder for ``last.pt`` and a copy of ``best.pt``; default ``out_dir``.
            Put it outside folders that DVC deletes before a stage runs.
        on_batch_end: called as ``on_batch_end(epoch, batch_index)`` after each step.
        batch_progress: show a tqdm bar over the batches of each epoch.
        verbose: print one line per epoch (also for epochs restored from a checkpoint,
            so a resumed run prints the same as an uninterrupted one).
        data_source: where the training images come from (stored in the checkpoint).

    Returns:
        :class:`TrainResult` with the history and the best epoch.
    """
    out_dir = config.resolve(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    ckpt_dir = config.resolve(checkpoint_dir) if checkpoint_dir is not None else out_dir
    ckpt_dir.mkdir(parents=True, exist_ok=True)
    names = list(class_names) if class_names is not None else manifest_class_names(manifest)
    ctx = torch_distributed.context()
    device = torch_distributed.device_for(ctx, select_device(cfg.device))
    numerics_ = numerics_for(cfg, device)
    amp = numerics_.autocast and numerics_.dtype == torch.float16  # the gradient scaler is for float16 only
    threads = numerics.thread_count(cfg.num_threads)
    if threads:
        torch.set_num_threads(threads)  # CPU sums depend on the thread count; fixing it fixes the result
    set_determinism(cfg.seed, device)

    train_set = ManifestDataset(manifest, "train", cfg.image_size, cfg.resize, cfg.equalize, class_names=names,
                                augment=cfg.augment)
    val_set = ManifestDataset(manifest, "val", cfg.image_size, cfg.resize, cfg.equalize, class_names=names)
    generator = make_generator(cfg.seed)
    pin = device.type == "cuda"
    train_loader = make_loader(train_set, cfg.batch_size, shuffle=True, weighted=cfg.weighted_sampler,
                               num_workers=cfg.num_workers, generator=generator, pin_memory=pin,
                               shard=(ctx.rank, ctx.world_size) if ctx.distributed else None)
    val_loader = make_loader(val_set, cfg.batch_size, shuffle=False, num_workers=cfg.num_workers,
                             generator=make_generator(cfg.seed + 1), pin_memory=pin)
    bn_loader = None
    if cfg.precise_bn:  # the training images without augmentation, in a fixed order
        bn_set = ManifestDataset(manifest, "train", cfg.image_size, cfg.resize, cfg.equalize, class_names=names,
                                 train=False)
        bn_set.decoded = train_set.decoded  # the same images
        bn_loader = make_loader(bn_set, cfg.batch_size, shuffle=False, num_workers=cfg.num_workers,
                                generator=make_generator(cfg.seed + 2), pin_memory=pin)

    model = build_model(cfg.arch, len(names), cfg.weights).to(device)
    if numerics_.channels_last:
        model = model.to(memory_format=torch.channels_last)
    criterion = nn.CrossEntropyLoss(label_smoothing=float(cfg.label_smoothing))
    val_criterion = nn.CrossEntropyLoss()  # best.pt is chosen on the plain validation loss
    optimizer = torch.optim.Adam(model.parameters(), lr=cfg.learning_rate)
    scheduler, per_batch = make_scheduler(cfg, optimizer, len(train_loader))
    scaler = torch.amp.GradScaler(device.type, enabled=amp)

    fingerprint = {"run": cfg.resume_key(), "data": data_fingerprint(manifest, names), "code": code_fingerprint(),
                   "threads": torch.get_num_threads()}
    history: list[dict] = []
    best_val, best_epoch, start = float("inf"), 0, 1
    seconds_before = 0.0  # training time of the epochs a resumed run restores (last.pt keeps the total)
    seconds_total = 0.0
    last_path, best_path, best_copy = ckpt_dir / "last.pt", out_dir / "best.pt", ckpt_dir / "best.pt"
    state = _load_resume_state(last_path, cfg.name) if resume and last_path.is_file() else None
    if state is not None:
        if state.get("fingerprint") == fingerprint and state["epoch"] <= cfg.epochs and best_copy.is_file():
            model.load_state_dict(state["model_state"])
            optimizer.load_state_dict(state["optimizer_state"])
            if scheduler is not None:
                scheduler.load_state_dict(state["scheduler_state"])
            scaler.load_state_dict(state["scaler_state"])
            restore_rng_state(state["rng"], generator)
            history = list(state["history"])
            best_val, best_epoch, start = state["best_val_loss"], state["best_epoch"], state["epoch"] + 1
            seconds_before = seconds_total = float(state.get("train_seconds", 0.0))
            if best_copy != best_path:
                _copy_atomic(best_copy, best_path)
            done = "finished; reloaded" if state["epoch"] == cfg.epochs else f"resuming after epoch {state['epoch']}"
            if ctx.is_main:
                print(f"{cfg.name}: {done} from {config.relative_to_project(last_path)}", flush=True)
        else:
            log.info("%s: %s was written with other settings, data or code, or more epochs; training afresh",
                        cfg.name, last_path)
    if start == 1 and ctx.is_main:  # a fresh run must not leave a previous run's best checkpoint or history behind
        for stale in (best_path, best_copy, out_dir / "history.csv"):
            stale.unlink(missing_ok=True)
    ctx.barrier()
    resumed_from = start - 1
    verbose = verbose and ctx.is_main
    trained = model  # what the optimizer steps; ``model`` stays the plain module (evaluation, state dicts)
    if ctx.distributed:
        if device.type == "cuda":
            trained = nn.SyncBatchNorm.convert_sync_batchnorm(model)
        trained = nn.parallel.DistributedDataParallel(
            trained, device_ids=[device.index] if device.type == "cuda" else None)
    if verbose:
        for row in history:
            print(_epoch_line(cfg.name, row, cfg.epochs, row.get("best", False)), flush=True)

    # How many processes trained it (DDP on CPUs: each normalises its share of the global batch). Not part of the
    # resume fingerprint: `dvc repro` reloads, in one process, what `torchrun` trained.
    meta = {**model_metadata(cfg, names, data_source), "world_size": ctx.world_size}
    started = time.perf_counter()
    if start <= cfg.epochs:  # each image decoded once, not once per epoch; the same bits either way
        keep_decoded([train_set, val_set], cfg.image_cache_mb, cfg.num_workers)
    for epoch in range(start, cfg.epochs + 1):
        lr = optimizer.param_groups[0]["lr"]
        train_set.image_size = image_size_at(cfg, epoch)  # read by the loader's workers, started per epoch
        loss, acc = train_one_epoch(trained, train_loader, criterion, optimizer, scaler, device, amp=numerics_,
                                    epoch=epoch, on_batch_end=on_batch_end, show=batch_progress and ctx.is_main,
                                    desc=f"{cfg.name} {epoch}/{cfg.epochs}",
                                    batch_scheduler=scheduler if per_batch else None, ctx=ctx)
        if bn_loader is not None:
            recompute_batchnorm(model, bn_loader, device, amp=numerics_)
        val_loss, val_acc = evaluate_loss(model, val_loader, val_criterion, device, amp=numerics_)
        if scheduler is not None and not per_batch:
            scheduler.step()
        improved = val_loss < best_val
        row = {"epoch": epoch, "loss": loss, "accuracy": acc, "val_loss": val_loss, "val_accuracy": val_acc,
               "lr": lr, "best": improved}
        history.append(row)
        if improved:
            best_val, best_epoch = val_loss, epoch
        seconds_total = seconds_before + time.perf_counter() - started  # every epoch so far, resumed ones included
        if not ctx.is_main:  # rank 0 writes; the others wait for it at the end of the epoch
            ctx.barrier()
            continue
        if improved:
            _save_atomic({**meta, "model_state": model.state_dict(), "epoch": epoch, "val_loss": val_loss}, best_copy)
            if best_copy != best_path:
                _copy_atomic(best_copy, best_path)
        _save_atomic({
            **meta, "model_state": model.state_dict(), "epoch": epoch, "val_loss": val_loss,
            "optimizer_state": optimizer.state_dict(),
            "scheduler_state": scheduler.state_dict() if scheduler is not None else None,
            "scaler_state": scaler.state_dict(), "rng": rng_state(generator), "history": history,
            "best_val_loss": best_val, "best_epoch": best_epoch, "fingerprint": fingerprint,
            "train_seconds": seconds_total,
        }, last_path)
        frame = pd.DataFrame(history)[HISTORY_COLUMNS]
        outputs.write_table(frame, out_dir / "history.csv", float_format="%.6g")
        if verbose:
            print(_epoch_line(cfg.name, row, cfg.epochs, improved), flush=True)
        ctx.barrier()

    if not history:
        raise ValueError(f"run {cfg.name!r} trained no epoch (train_multiclass.epochs={cfg.epochs})")
    frame = pd.DataFrame(history)[HISTORY_COLUMNS]
    if ctx.is_main:
        outputs.write_table(frame, out_dir / "history.csv", float_format="%.6g")
    elapsed = time.perf_counter() - started
    # train_seconds: this call (0 for a finished run reloaded); train_seconds_total: every epoch, resumed ones
    # included, as last.pt records it (so a reloaded run reports the same figure as the call that trained it)
    timing = {"epochs_trained": cfg.epochs - resumed_from, "train_seconds": round(elapsed, 1),
              "train_seconds_total": round(seconds_total, 1),
              "threads": torch.get_num_threads()}
    return TrainResult(cfg, out_dir, frame, best_epoch, float(best_val), names, resumed_from, extra=timing,
                       checkpoint_dir=ckpt_dir)


def train_all(configs: Sequence[RunConfig], manifest: pd.DataFrame, models_dir: str | Path, *,
              resume: bool = True, checkpoint_dir: str | Path | None = None,
              batch_progress: bool = False, data_source: str = "") -> dict[str, TrainResult]:
    """Train every run into ``models_dir/<run name>/``; returns ``{run name: TrainResult}``.

    ``checkpoint_dir`` (default ``models_dir``) holds ``<run name>/last.pt`` for resuming;
    ``data_source`` is stored in every checkpoint (:func:`model_metadata`).
    """
    models_dir = config.resolve(models_dir)
    ckpt_root = config.resolve(checkpoint_dir) if checkpoint_dir is not None else models_dir
    return {cfg.name: train(cfg, manifest, models_dir / cfg.name, resume=resume, checkpoint_dir=ckpt_root / cfg.name,
                            batch_progress=batch_progress, data_source=data_source)
            for cfg in configs}



def train_seeds(configs: Sequence[RunConfig], manifest: pd.DataFrame, models_dir: str | Path, seeds: int, *,
                resume: bool = True, checkpoint_dir: str | Path | None = None,
                data_source: str = "") -> dict[str, dict[int, TrainResult]]:
    """Train each run again with ``seeds - 1`` further seeds (``seed + 1``, ``seed + 2``, ...).

    The first seed is the run of :func:`train_all` (``models_dir/<run>/``); the others go to
    ``models_dir/<run>/seed<k>/``. Returns ``{run: {seed: TrainResult}}`` for the further seeds
    only (empty when ``seeds`` is 1), so a study reports the spread that training randomness alone causes.
    """
    if seeds < 1:
        raise ValueError(f"train_multiclass.seeds must be >= 1, got {seeds!r}")
    models_dir = config.resolve(models_dir)
    ckpt_root = config.resolve(checkpoint_dir) if checkpoint_dir is not None else models_dir
    out: dict[str, dict[int, TrainResult]] = {}
    for cfg in configs:
        for k in range(1, seeds):
            seeded = dataclasses.replace(cfg, seed=cfg.seed + k)
            folder = f"seed{seeded.seed}"
            out.setdefault(cfg.name, {})[seeded.seed] = train(
                seeded, manifest, models_dir / cfg.name / folder, resume=resume,
                checkpoint_dir=ckpt_root / cfg.name / folder, data_source=data_source)
    return out
