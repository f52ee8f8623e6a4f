"""The schema of ``params.yaml``: every section, key, type and range, checked strictly.

``params.yaml`` is the single source of parameter values, so this schema holds
NO defaults: every key is required, an unknown key is an error, and values are
not coerced (``'ten'`` or ``3.5`` is not an integer, ``'no'`` is not a boolean,
``1e-4`` without a decimal point, which YAML 1.1 reads as a string, is not a
number). :func:`validate_params` reports every problem at once, one line each,
naming the dotted key, the value given and what is allowed::

    params.yaml: 2 problems
      train_binary.epoch: unknown key; did you mean 'epochs'?
      data.keep_official_test: expected true or false, got 'no' (a string: write true or false without quotes)

Profiles (``profiles/*.yaml``) and ``dvc exp run -S key=value`` change single
dotted keys; :func:`apply_overrides` applies them and rejects unknown keys with
the closest valid one. Framework-free: imports pydantic and PyYAML only.

Choices such as backbones and architectures are listed here as ``Literal`` types
and must agree with the code that uses them (``tf_model.BACKBONES``,
``torch_model.BUILDERS``, ``data.SOURCES``, ...); tests/unit/test_schema.py checks
that without importing a framework.
"""

from __future__ import annotations

import copy
import decimal
import difflib
import types
import typing
from collections.abc import Mapping, Sequence
from typing import Annotated, Any, Literal, Union

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator
from pydantic.fields import FieldInfo

# --------------------------------------------------------------------------------------------------
# Choices (each must agree with the module named beside it; see tests/unit/test_schema.py)
# --------------------------------------------------------------------------------------------------
BinarySource = Literal["synthetic", "kermany", "folder"]  # data.SOURCES with two classes
MulticlassSource = Literal["synthetic", "covid_radiography", "kermany3", "kermany", "folder"]  # data.SOURCES
ResizeMode = Literal["stretch", "pad"]  # images.RESIZE_MODES
EqualizeMode = Literal["none", "hist", "clahe"]  # images.EQUALIZE_MODES
Backbone = Literal["small_cnn", "xception", "inception_resnet_v2", "densenet121"]  # tf_model.BACKBONES
InputNorm = Literal["auto", "standardize", "backbone", "standardize_backbone"]  # tf_model.INPUT_NORMS
Imbalance = Literal["weighted_loss", "class_weight", "none"]  # tf_train.IMBALANCE
Monitor = Literal["val_loss", "val_auc"]  # tf_train.TrainConfig
FlipMode = Literal["none", "horizontal", "vertical", "horizontal_and_vertical"]  # tf_layers.FLIP_MODES
TtaMode = Literal["none", "flip"]  # tf_train.TTA_MODES
Arch = Literal["densenet121", "resnet18", "resnet50", "squeezenet", "squeezenet1_1",  # torch_model.BUILDERS
               "efficientnet_lite0", "xception"]
LrSchedule = Literal["constant", "onecycle", "cosine"]  # torch_train.LR_SCHEDULES
Augment = Literal["none", "flip", "radiograph"]  # torch_data.AUGMENTATIONS
Split = Literal["train", "val", "test"]  # data.SPLITS
# gradcam_maps.COLORMAPS: perceptually uniform maps first; jet and turbo replicate the original notebooks
Colormap = Literal["inferno", "viridis", "magma", "plasma", "cividis", "turbo", "jet", "hot"]
DeletionBaseline = Literal["blur", "mean"]  # gradcam_faithfulness.BASELINES
ShortcutRegion = Literal["central", "lungs_otsu"]  # shortcuts.REGIONS

# Smallest square input side of each Keras backbone (tf_model._APPLICATIONS; small_cnn: 16).
BACKBONE_MIN_SIZE = {"small_cnn": 16, "xception": 71, "inception_resnet_v2": 75, "densenet121": 32}


class Allowed:
    """Field metadata: how to say what a field accepts, where the type alone does not say it well."""

    def __init__(self, text: str):
        self.text = text

    def __repr__(self) -> str:
        return f"Allowed({self.text!r})"


Path_ = Annotated[str, Field(min_length=1), Allowed("a non-empty path string")]
Weights = Annotated[str, Field(min_length=1), Allowed("'none', 'imagenet' or the path of a local weights file")]
Device = Annotated[str, Field(pattern=r"^(auto|cpu|cuda|cuda:\d+)$"), Allowed("one of 'auto', 'cpu', 'cuda', 'cuda:N'")]
RunName = Annotated[str, Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$"),
                    Allowed("a folder-safe name (letters, digits, '_', '.', '-')")]


class _Section(BaseModel):
    """Base of every section: unknown keys forbidden, no coercion, no inf/nan, immutable."""

    model_config = ConfigDict(extra="forbid", strict=True, allow_inf_nan=False, frozen=True)


# --------------------------------------------------------------------------------------------------
# Sections
# --------------------------------------------------------------------------------------------------
class PatientsScale(_Section):
    """``synthesize.patients_scale``: x the generator's patients per class, per task."""

    binary: float = Field(gt=0)
    multiclass: float = Field(gt=0)


class SyntheticExternal(_Section):
    """``synthesize.external``: the demo's second site (:func:`xraylib.synthetic.generate_external`)."""

    patients_per_class: int = Field(ge=2)
    gamma: float = Field(gt=0)
    frame: float = Field(ge=0, lt=0.5)


class Synthesize(_Section):
    """Stage ``synthesize``: the synthetic demo data (:mod:`xraylib.synthetic`)."""

    image_size: int = Field(ge=32)
    difficulty: float = Field(ge=0, le=1)
    patients_scale: PatientsScale
    external: SyntheticExternal


# data.<task>.compare_with: further image folders the data stage checks this task's images against for
# near-duplicates (data.build_manifest; the other task's root and data.external roots are always checked)
CompareWith = Annotated[list[Path_], Allowed("a list of folder paths ([] = none)")]


class BinaryData(_Section):
    """``data.binary``: where the NORMAL/PNEUMONIA images come from."""

    source: BinarySource
    root: Path_
    compare_with: CompareWith


class MulticlassData(_Section):
    """``data.multiclass``: where the multi-class images come from."""

    source: MulticlassSource
    root: Path_
    compare_with: CompareWith


class ExternalSet(_Section):
    """One entry of ``data.external``: a class-per-folder image set from another site, scored, never trained on."""

    name: RunName
    root: Path_
    # none: the model as shipped (stored threshold and recalibration). platt | temperature: ALSO a clearly
    # labelled site-calibrated report, the threshold and that map fitted on this set's own patients by 2-fold
    # cross-fitting (xraylib.site_calibration), so no image is decided by a rule fitted on its patient
    site_calibration: Literal["none", "platt", "temperature"]


class Data(_Section):
    """The shared ``data`` section: sources, patient-level splits, the one image preparation."""

    binary: BinaryData
    multiclass: MulticlassData
    val_fraction: float = Field(gt=0, lt=0.5)  # data.assign_splits: 0 < f < 0.5
    test_fraction: float = Field(gt=0, lt=0.5)
    keep_official_test: bool
    external: Annotated[list[ExternalSet], Allowed("a list of {name, root} mappings ([] = none)")]
    resize: ResizeMode
    equalize: EqualizeMode


class Explore(_Section):
    """Stage ``explore`` (notebook 01)."""

    samples_per_class: int = Field(ge=1)


class Preprocess(_Section):
    """Stage ``preprocess`` (notebook 02)."""

    image_size: int = Field(ge=16)
    n_examples: int = Field(ge=1)


class TrainBinary(_Section):
    """Stage ``train_binary``: the Keras NORMAL-vs-PNEUMONIA model (notebook 03)."""

    manifest_dir: Path_
    model_dir: Path_
    backbone: Backbone
    weights: Weights
    image_size: int = Field(ge=16)
    input_norm: InputNorm
    equalize_override: EqualizeMode | None
    batch_size: int = Field(ge=1)
    epochs: int = Field(ge=1)
    learning_rate: float = Field(gt=0)
    fine_tune_epochs: int = Field(ge=0)
    fine_tune_at: Annotated[str, Field(min_length=1), Allowed("'auto' or the name of a backbone layer")]
    fine_tune_learning_rate: float = Field(gt=0)
    cache_features: bool
    cache_views: int = Field(ge=1)
    dropout: float = Field(ge=0, lt=1)
    l2: float = Field(ge=0)
    label_smoothing: float = Field(ge=0, lt=1)
    imbalance: Imbalance
    monitor: Monitor
    early_stopping_patience: int = Field(ge=0)
    reduce_lr_patience: int = Field(ge=0)
    reduce_lr_factor: float = Field(gt=0, lt=1)  # keras ReduceLROnPlateau refuses factor >= 1
    augment_flip: FlipMode
    augment_rotation: float = Field(ge=0, le=1)  # keras random-layer factors lie in [0, 1]
    augment_zoom: float = Field(ge=0, le=1)
    augment_contrast: float = Field(ge=0, le=1)
    augment_brightness: float = Field(ge=0, le=1)
    tta: TtaMode
    original_threshold: float = Field(gt=0, lt=1)
    n_bootstrap: int = Field(ge=1)
    recalibration: Literal["none", "platt", "temperature"]
    calibrate_on: Annotated[str, Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$"),
                            Allowed("'validation' or the name of a data.external set")]

    @model_validator(mode="after")
    def _backbone_fits(self) -> "TrainBinary":
        problems = []
        least = BACKBONE_MIN_SIZE[self.backbone]
        if self.image_size < least:
            problems.append(f"image_size: expected an integer >= {least} for backbone {self.backbone!r}, "
                            f"got {self.image_size!r}")
        if self.backbone == "small_cnn":
            if self.weights.lower() != "none":
                problems.append(f"weights: expected 'none' for backbone 'small_cnn' (it has no pretrained weights), "
                                f"got {self.weights!r}")
            if self.input_norm not in ("auto", "standardize"):
                problems.append(f"input_norm: expected 'auto' or 'standardize' for backbone 'small_cnn' "
                                f"(the others need an ImageNet backbone), got {self.input_norm!r}")
        if self.fine_tune_epochs > 0 and self.weights.lower() == "none":
            problems.append(f"fine_tune_epochs: expected 0 with weights 'none' (training from scratch already "
                            f"trains every layer; fine-tuning needs pretrained weights), got {self.fine_tune_epochs!r}")
        if problems:
            raise ValueError("\n".join(problems))
        return self


ProgressiveSizes = Annotated[list[Annotated[int, Field(ge=32)]],
                            Allowed("a list of image sizes >= 32 for the first epochs ([] = none)")]


class Run(_Section):
    """One run of ``train_multiclass.runs`` (its name is the key: ``runs: {resnet18: {arch: resnet18, ...}}``)."""

    arch: Arch
    step_lr: bool
    # Optional per-run overrides of the shared settings (absent or null = the train_multiclass value).
    learning_rate: float | None = Field(default=None, gt=0)
    weights: Weights | None = None
    image_size: int | None = Field(default=None, ge=32)
    epochs: int | None = Field(default=None, ge=1)
    batch_size: int | None = Field(default=None, ge=1)
    lr_schedule: LrSchedule | None = None
    label_smoothing: float | None = Field(default=None, ge=0, lt=1)
    augment: Augment | None = None
    precise_bn: bool | None = None
    channels_last: bool | None = None
    cpu_bfloat16: bool | None = None
    progressive_resizing: ProgressiveSizes | None = None


class TrainMulticlass(_Section):
    """Stage ``train_multiclass``: PyTorch fine-tuning of the four-class study (notebook 04)."""

    manifest_dir: Path_
    model_dir: Path_
    checkpoint_dir: Path_
    image_size: int = Field(ge=32)  # torch_data.check_image_settings: the networks downsample 32x
    batch_size: int = Field(ge=1)
    num_workers: int = Field(ge=0)
    image_cache_mb: int = Field(ge=0)  # torch_data.keep_decoded
    epochs: int = Field(ge=1)
    learning_rate: float = Field(gt=0)
    step_size: int = Field(ge=1)
    gamma: float = Field(gt=0, le=1)
    weights: Weights
    weighted_sampler: bool
    device: Device
    mixed_precision: bool
    precise_bn: bool
    num_threads: int = Field(ge=0)
    lr_schedule: LrSchedule  # torch_train.make_scheduler; runs with step_lr use StepLR
    label_smoothing: float = Field(ge=0, lt=1)
    augment: Augment  # torch_data.build_transform
    channels_last: bool
    cpu_bfloat16: bool
    progressive_resizing: ProgressiveSizes
    resume: bool
    eval_batch_size: int = Field(ge=1)
    n_resamples: int = Field(ge=1)
    seeds: int = Field(ge=1)
    recalibration: Literal["none", "temperature"]
    # One DVC stage per run (dvc.yaml: train_run, foreach over this mapping), keyed by the run's name.
    runs: Annotated[dict[RunName, Run], Field(min_length=1),
                    Allowed("a non-empty mapping of run name -> {arch, step_lr, ...}")]

    @model_validator(mode="after")
    def _runs_agree(self) -> "TrainMulticlass":
        problems = []
        for name, run in self.runs.items():
            epochs = run.epochs if run.epochs is not None else self.epochs
            sizes = run.progressive_resizing if run.progressive_resizing is not None else self.progressive_resizing
            if len(sizes) >= epochs:
                where = f"runs.{name}.progressive_resizing" if run.progressive_resizing is not None \
                    else "progressive_resizing"
                problems.append(f"{where}: expected fewer sizes than the run's {epochs} epochs (the last epochs "
                                f"train at image_size), got {sizes}")
        if problems:
            raise ValueError("\n".join(problems))
        return self


class Gradcam(_Section):
    """Stage ``gradcam``: class activation maps of both models (notebook 05)."""

    binary_model: Path_
    multiclass_dir: Path_
    split: Split
    max_per_class: int = Field(ge=0)
    n_examples: int = Field(ge=1)
    top_fraction: float = Field(gt=0, le=1)  # gradcam_scores.topk_iou
    colormap: Colormap
    batch_size: int = Field(ge=1)
    shortcut_min_accuracy: float = Field(ge=0, le=1)
    shortcut_min_lung_energy: float = Field(ge=0, le=1)
    deletion_steps: int = Field(ge=0)  # gradcam_faithfulness.perturbation_curves; 0 = no faithfulness check
    deletion_baseline: DeletionBaseline
    shortcut_border: float = Field(ge=0, lt=0.5)  # shortcuts.border_mask: band per edge, share of the side
    shortcut_region: ShortcutRegion
    shortcut_min_informedness: float = Field(ge=0, le=1)  # shortcuts.shortcut_findings
    shortcut_min_retained: float = Field(ge=0, le=1)
    shortcut_border_loss: float = Field(ge=0, le=1)
    shortcut_n_resamples: int = Field(ge=1)


class Params(_Section):
    """The whole ``params.yaml``."""

    seed: int = Field(ge=0, lt=2**32)  # numpy seeds are 32-bit
    synthesize: Synthesize
    data: Data
    explore: Explore
    preprocess: Preprocess
    train_binary: TrainBinary
    train_multiclass: TrainMulticlass
    gradcam: Gradcam

    @model_validator(mode="after")
    def _calibration_set_exists(self) -> "Params":
        target = self.train_binary.calibrate_on
        if target == "validation":
            return self
        sets = {entry.name: entry for entry in self.data.external}
        if target not in sets:
            raise ValueError(f"train_binary.calibrate_on: expected 'validation' or the name of a data.external set "
                             f"{sorted(sets)}, got {target!r}")
        if sets[target].site_calibration == "none":
            raise ValueError(f"train_binary.calibrate_on: data.external set {target!r} needs site_calibration "
                             f"platt or temperature (its figures are then reported cross-fitted), got 'none'")
        return self


# --------------------------------------------------------------------------------------------------
# Validation with one readable message
# --------------------------------------------------------------------------------------------------
class ParamsError(ValueError):
    """Invalid parameters; ``problems`` holds one line per problem (the message lists them all)."""

    multiline = True  # xraylib.errors prints the message as it is: a header line, then one line per problem

    def __init__(self, source: str, problems: list[str]):
        self.source = source
        self.problems = problems
        count = f"{len(problems)} problem{'s' if len(problems) != 1 else ''}"
        super().__init__(f"{source}: {count}\n" + "\n".join(f"  {line}" for line in problems))


def validate_params(raw: Any, source: str = "params.yaml") -> Params:
    """Check a whole params dict (as read from YAML) against the schema.

    Args:
        raw: the parsed ``params.yaml`` (after any overrides).
        source: what to call it in messages, e.g. ``"params.yaml + profiles/kermany_cpu.yaml"``.

    Returns:
        The validated, immutable :class:`Params`.

    Raises:
        ParamsError: a ``ValueError`` listing every problem, one line each.
    """
    if not isinstance(raw, Mapping):
        raise ParamsError(source, [f"expected a mapping of sections ({', '.join(Params.model_fields)}), "
                                   f"got {_show(raw)}"])
    try:
        return Params.model_validate(dict(raw))
    except ValidationError as err:
        raise ParamsError(source, _problems(err, source)) from None


def _problems(err: ValidationError, source: str) -> list[str]:
    errors = err.errors(include_url=False)
    # A typo ('train_binary.epoch') also makes the key it stands for missing: report the typo once.
    renamed = set()
    for e in errors:
        if e["type"] == "extra_forbidden":
            key, parent, _, _ = _locate(e["loc"])
            close = _closest(key.rsplit(".", 1)[-1], list(_fields(parent)))
            if close:
                renamed.add(f"{key.rsplit('.', 1)[0]}.{close}" if "." in key else close)
    lines: list[str] = []
    for e in errors:
        key, parent, annotation, metadata = _locate(e["loc"])
        kind, value = e["type"], e.get("input")
        if kind == "missing":
            if key not in renamed:
                lines.append(f"{key}: missing ({source} must define it)")
        elif kind == "extra_forbidden":
            lines.append(f"{key}: unknown key{_suggest(key.rsplit('.', 1)[-1], list(_fields(parent)))}")
        elif kind == "value_error":  # cross-field checks: one 'field: text' line per problem
            text = str(e["ctx"]["error"]) if "ctx" in e else e["msg"]
            lines += [f"{key}.{part}" if key else part for part in text.splitlines()]
        elif annotation is not None:
            lines.append(f"{key}: expected {_describe(annotation, metadata)}, got {_show(value)}"
                         f"{_hint(value, annotation)}")
        else:
            lines.append(f"{key}: {e['msg']}, got {_show(value)}")
    return list(dict.fromkeys(lines))


def _locate(loc: tuple) -> tuple[str, type[BaseModel] | None, Any, list]:
    """Dotted key of an error location, the model holding it, and its annotation and metadata."""
    model: type[BaseModel] | None = Params
    parent: type[BaseModel] | None = None
    annotation: Any = None
    metadata: list = []
    keyed: Any = None
    key = ""
    for seg in loc:
        if isinstance(seg, int) and annotation is not None and typing.get_origin(_strip(annotation)[0]) is list:
            key += f"[{seg}]"
            annotation, extra = _strip(typing.get_args(_strip(annotation)[0])[0])
            metadata = extra
            model = annotation if _is_model(annotation) else None
        elif seg == "[key]" and keyed is not None:  # the mapping's key itself failed its check (a run name)
            annotation, metadata = _strip(typing.get_args(keyed)[0])
            break
        elif isinstance(seg, str) and annotation is not None and typing.get_origin(_strip(annotation)[0]) is dict:
            keyed = _strip(annotation)[0]  # a mapping keyed by name (train_multiclass.runs): the value follows
            key = f"{key}.{seg}"
            annotation, metadata = _strip(typing.get_args(keyed)[1])
            model = annotation if _is_model(annotation) else None
            continue
        elif model is not None and isinstance(seg, str):
            parent = model
            key = f"{key}.{seg}" if key else seg
            field = model.model_fields.get(seg)
            if field is None:  # an unknown key
                return key, parent, None, []
            annotation, metadata = field.annotation, list(field.metadata)
            model = annotation if _is_model(annotation) else None
        else:  # a union branch tag or similar: the location is complete
            break
    return key, parent, annotation, metadata


def _strip(annotation: Any) -> tuple[Any, list]:
    """``Annotated[T, m...]`` -> ``(T, [m...])`` (FieldInfo metadata included)."""
    metadata: list = []
    while typing.get_origin(annotation) is Annotated:
        annotation, *extra = typing.get_args(annotation)
        for item in extra:
            metadata += list(item.metadata) if isinstance(item, FieldInfo) else [item]
    return annotation, metadata


def _is_model(annotation: Any) -> bool:
    return isinstance(annotation, type) and issubclass(annotation, BaseModel)


def _fields(model: type[BaseModel] | None) -> dict:
    return dict(model.model_fields) if model is not None else {}


def _closest(word: str, choices: list[str]) -> str | None:
    close = difflib.get_close_matches(word, choices, n=1, cutoff=0.6)
    return close[0] if close else None


def suggestion(word: str, choices: Sequence[str]) -> str:
    """``did you mean 'key'?`` for a misspelt ``word``, else the valid keys (empty when there are none)."""
    close = _closest(word, list(choices))
    if close:
        return f"did you mean {close!r}?"
    return f"valid keys: {', '.join(choices)}" if choices else ""


def _suggest(word: str, choices: list[str]) -> str:
    text = suggestion(word, choices)
    return f"; {text}" if text else ""


def _bounds(metadata: list) -> str:
    lower = upper = None
    for item in metadata:
        for name in ("ge", "gt"):
            if getattr(item, name, None) is not None:
                lower = (name, getattr(item, name))
        for name in ("le", "lt"):
            if getattr(item, name, None) is not None:
                upper = (name, getattr(item, name))
    if lower and upper:
        return f" in {'[' if lower[0] == 'ge' else '('}{lower[1]}, {upper[1]}{']' if upper[0] == 'le' else ')'}"
    symbol = {"ge": ">=", "gt": ">", "le": "<=", "lt": "<"}
    return "".join(f" {symbol[b[0]]} {b[1]}" for b in (lower, upper) if b)


def _describe(annotation: Any, metadata: list | None = None) -> str:
    """What a field accepts, in words: 'an integer >= 1', "one of 'a', 'b'", 'true or false', ..."""
    annotation, extra = _strip(annotation)
    metadata = list(metadata or []) + extra
    for item in metadata:
        if isinstance(item, Allowed):
            return item.text
    origin = typing.get_origin(annotation)
    if origin in (Union, types.UnionType):
        options = [a for a in typing.get_args(annotation) if a is not type(None)]
        text = " or ".join(_describe(a) for a in options)
        return f"null or {text}" if len(options) < len(typing.get_args(annotation)) else text
    if origin is Literal:
        return "one of " + ", ".join(repr(v) for v in typing.get_args(annotation))
    if annotation is bool:
        return "true or false"
    if annotation is int:
        return "an integer" + _bounds(metadata)
    if annotation is float:
        return "a number" + _bounds(metadata)
    if annotation is str:
        return "a string"
    if origin is list:
        return f"a list of {_describe(typing.get_args(annotation)[0])}"
    if _is_model(annotation):
        names = list(annotation.model_fields)
        shown = ", ".join(names) if len(names) <= 6 else ", ".join(names[:4]) + f", ... ({len(names)} keys)"
        return f"a mapping with keys {shown}"
    return getattr(annotation, "__name__", str(annotation))


def _show(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _hint(value: Any, annotation: Any) -> str:
    """A short fix for the usual YAML slips: numbers or booleans in quotes, 1e-4 read as a string."""
    annotation = _strip(annotation)[0]
    if isinstance(value, bool) and annotation in (int, float):
        return " (a boolean)"
    if isinstance(value, str) and annotation in (int, float):
        try:
            float(value)
        except ValueError:
            return " (a string)"
        if "e" in value.lower():
            return f" (a string: YAML reads {value} as text; write {format(decimal.Decimal(value.strip()), 'f')})"
        return " (a string: write the number without quotes)"
    if isinstance(value, float) and annotation is int:
        return " (not a whole number)" if not value.is_integer() else f" (write {int(value)} without a decimal point)"
    if isinstance(value, (str, int)) and annotation is bool:
        return " (a string: write true or false without quotes)" if isinstance(value, str) else " (write true or false)"
    return ""


# --------------------------------------------------------------------------------------------------
# Overrides, flattening, section keys
# --------------------------------------------------------------------------------------------------
def _schema_node(dotted: str) -> tuple[Any, list[str]]:
    """The annotation at a dotted key of the schema, and problems (unknown keys, with the closest)."""
    annotation: Any = Params
    walked: list[str] = []
    parts = dotted.split(".")
    for i, seg in enumerate(parts):
        model = _strip(annotation)[0]
        if typing.get_origin(model) is dict:  # a mapping keyed by name (train_multiclass.runs): any name
            annotation = typing.get_args(model)[1]
            walked.append(seg)
            continue
        if not _is_model(model):
            where = ".".join(walked)
            return None, [f"{dotted}: unknown key; {where!r} is a single value, not a section (set it whole)"]
        if seg not in model.model_fields:
            choices = list(model.model_fields)
            close = _closest(seg, choices)
            prefix = ".".join(walked) + "." if walked else ""
            hint = (f"; did you mean {'.'.join([*walked, close, *parts[i + 1:]])!r}?" if close
                    else f"; valid keys{' of ' + prefix[:-1] if prefix else ''}: {', '.join(choices)}")
            return None, [f"{dotted}: unknown key{hint}"]
        annotation = model.model_fields[seg].annotation
        walked.append(seg)
    return annotation, []


def apply_overrides(raw: Mapping, overrides: Mapping[str, object]) -> dict:
    """Return a copy of ``raw`` with dotted overrides applied (``{"train_binary.epochs": 5}``).

    What ``dvc exp run -S key=value`` and the profiles in ``profiles/`` do. Each key must
    name a key of the schema (a value or a whole section); the result still needs
    :func:`validate_params`.

    Raises:
        ValueError: unknown dotted keys, all listed, each with the closest valid key.
    """
    problems = [line for key in overrides for line in _schema_node(str(key))[1]]
    if problems:
        raise ValueError("unknown parameter override(s):\n" + "\n".join(f"  {p}" for p in problems))
    result = copy.deepcopy(dict(raw))
    for key, value in overrides.items():
        *parents, leaf = str(key).split(".")
        node = result
        for seg in parents:
            if not isinstance(node.get(seg), dict):
                node[seg] = {}
            node = node[seg]
        node[leaf] = copy.deepcopy(value)
    return result


def parse_override(text: str) -> tuple[str, object]:
    """``"train_binary.epochs=5"`` -> ``("train_binary.epochs", 5)``; the value is read as YAML, as ``dvc -S`` does.

    Raises:
        ValueError: no ``=``.
    """
    import yaml

    key, sep, value = text.partition("=")
    if not sep or not key.strip():
        raise ValueError(f"override {text!r}: expected key=value, e.g. train_binary.epochs=5")
    return key.strip(), yaml.safe_load(value)


def flatten(params: Params | Mapping, prefix: str = "") -> dict[str, Any]:
    """``{"train_binary": {"epochs": 20}}`` -> ``{"train_binary.epochs": 20}``; lists and mappings keyed by name
    (``train_multiclass.runs``, :func:`is_named_mapping`) stay whole values: a profile's runs replace all runs."""
    node = params.model_dump() if isinstance(params, BaseModel) else params
    flat: dict[str, Any] = {}
    for key, value in node.items():
        dotted = f"{prefix}{key}"
        if isinstance(value, Mapping) and value and not is_named_mapping(dotted):
            flat.update(flatten(value, dotted + "."))
        else:
            flat[dotted] = value
    return flat


def is_named_mapping(dotted: str) -> bool:
    """Whether a dotted key is a mapping keyed by free names (``train_multiclass.runs``), not a fixed section."""
    annotation, problems = _schema_node(dotted)
    return not problems and typing.get_origin(_strip(annotation)[0]) is dict


def section_model(name: str) -> type[BaseModel]:
    """The model of a section by dotted name: ``"train_binary"``, ``"data.binary"``, ``"train_multiclass.runs"``.

    Raises:
        KeyError: not a section of params.yaml (with the closest name).
    """
    annotation, problems = _schema_node(name)
    if problems:
        raise KeyError(problems[0])
    annotation = _strip(annotation)[0]
    if typing.get_origin(annotation) in (list, dict):
        annotation = _strip(typing.get_args(annotation)[-1])[0]
    if not _is_model(annotation):
        raise KeyError(f"{name}: a single value, not a section of params.yaml")
    return annotation


def section_keys(name: str) -> list[str]:
    """Key names of a section, in schema order (``section_keys("train_multiclass.runs")`` -> arch, step_lr, ...)."""
    return list(section_model(name).model_fields)
