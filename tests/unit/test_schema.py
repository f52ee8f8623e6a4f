"""The params.yaml schema: the real file and every profile pass, each usual mistake gives one clear line."""

from __future__ import annotations

import ast
import copy
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from xraylib import schema

ROOT = Path(__file__).resolve().parents[2]  # the repository these tests belong to
PROFILES = sorted((ROOT / "profiles").glob("*.yaml"))
FRAMEWORKS = ("tensorflow", "keras", "torch", "torchvision")


@pytest.fixture(scope="module")
def params_text() -> str:
    return (ROOT / "params.yaml").read_text()


@pytest.fixture
def raw(params_text) -> dict:
    return yaml.safe_load(params_text)


def problems_of(raw: dict) -> list[str]:
    with pytest.raises(schema.ParamsError) as info:
        schema.validate_params(raw)
    message = str(info.value)
    assert "http" not in message and "Traceback" not in message and "pydantic" not in message
    lines = message.splitlines()
    assert lines[0] == f"params.yaml: {len(info.value.problems)} problem{'s' if len(lines) > 2 else ''}"
    assert [line.strip() for line in lines[1:]] == info.value.problems
    return info.value.problems


def test_params_yaml_validates(raw):
    params = schema.validate_params(raw)
    assert isinstance(params, schema.Params)
    assert list(params.train_multiclass.runs) == list(raw["train_multiclass"]["runs"])  # keyed by name, in order


@pytest.mark.parametrize("profile", PROFILES, ids=[p.stem for p in PROFILES])
def test_every_profile_validates(raw, profile):
    overrides = schema.flatten(yaml.safe_load(profile.read_text()) or {})
    assert overrides, f"{profile.name} overrides nothing"
    schema.validate_params(schema.apply_overrides(raw, overrides), source=f"params.yaml + {profile.name}")


def _rename(raw, section, old, new):
    raw[section][new] = raw[section].pop(old)


def _yaml_value(raw, section, key, text):
    """Set a value as YAML reads ``key: text`` (quotes, 1e-4, ... behave as in the file)."""
    raw[section][key] = yaml.safe_load(f"{key}: {text}")[key]


ARCHS = ("'densenet121', 'resnet18', 'resnet50', 'squeezenet', 'squeezenet1_1', 'efficientnet_lite0', "
         "'xception'")
CASES = {
    "typo_epoch": (lambda r: _rename(r, "train_binary", "epochs", "epoch"),
                   "train_binary.epoch: unknown key; did you mean 'epochs'?"),
    "typo_val_fractoin": (lambda r: _rename(r, "data", "val_fraction", "val_fractoin"),
                          "data.val_fractoin: unknown key; did you mean 'val_fraction'?"),
    "missing_val_fraction": (lambda r: r["data"].pop("val_fraction"),
                             "data.val_fraction: missing (params.yaml must define it)"),
    "missing_section": (lambda r: r.pop("train_binary"), "train_binary: missing (params.yaml must define it)"),
    "missing_seed": (lambda r: r.pop("seed"), "seed: missing (params.yaml must define it)"),
    "quoted_no": (lambda r: _yaml_value(r, "data", "keep_official_test", "'no'"),
                  "data.keep_official_test: expected true or false, got 'no' "
                  "(a string: write true or false without quotes)"),
    "fraction_text": (lambda r: _yaml_value(r, "data", "val_fraction", "abc"),
                      "data.val_fraction: expected a number in (0, 0.5), got 'abc' (a string)"),
    "seed_text": (lambda r: r.update(seed="forty-two"),
                  "seed: expected an integer in [0, 4294967296), got 'forty-two' (a string)"),
    "epochs_text": (lambda r: _yaml_value(r, "train_multiclass", "epochs", "ten"),
                    "train_multiclass.epochs: expected an integer >= 1, got 'ten' (a string)"),
    "negative_size": (lambda r: _yaml_value(r, "train_binary", "image_size", "-64"),
                      "train_binary.image_size: expected an integer >= 16, got -64"),
    "lr_1e-4": (lambda r: _yaml_value(r, "train_binary", "learning_rate", "1e-4"),
                "train_binary.learning_rate: expected a number > 0, got '1e-4' "
                "(a string: YAML reads 1e-4 as text; write 0.0001)"),
    "unknown_arch": (lambda r: r["train_multiclass"]["runs"]["resnet18"].update(arch="vgg16"),
                     f"train_multiclass.runs.resnet18.arch: expected one of {ARCHS}, got 'vgg16'"),
    "float_for_int": (lambda r: _yaml_value(r, "train_binary", "epochs", "3.5"),
                      "train_binary.epochs: expected an integer >= 1, got 3.5 (not a whole number)"),
    "bool_for_int": (lambda r: _yaml_value(r, "gradcam", "batch_size", "true"),
                     "gradcam.batch_size: expected an integer >= 1, got True (a boolean)"),
    "bad_choice": (lambda r: r["data"].update(equalize="histogram"),
                   "data.equalize: expected one of 'none', 'hist', 'clahe', got 'histogram'"),
    "bad_device": (lambda r: r["train_multiclass"].update(device="gpu"),
                   "train_multiclass.device: expected one of 'auto', 'cpu', 'cuda', 'cuda:N', got 'gpu'"),
    "empty_section": (lambda r: r.update(explore=None),
                      "explore: expected a mapping with keys samples_per_class, got None"),
    "unknown_section": (lambda r: r.update(train_binery={}),
                        "train_binery: unknown key; did you mean 'train_binary'?"),
    "backbone_min_size": (lambda r: r["train_binary"].update(backbone="xception", weights="imagenet"),
                          "train_binary.image_size: expected an integer >= 71 for backbone 'xception', got 64"),
    "bad_run_name": (lambda r: r["train_multiclass"]["runs"].update({"resnet 18": {"arch": "resnet18",
                                                                                     "step_lr": False}}),
                     "train_multiclass.runs.resnet 18: expected a folder-safe name (letters, digits, '_', '.', '-'), "
                     "got 'resnet 18'"),
    "run_typo": (lambda r: r["train_multiclass"]["runs"]["resnet50"].update(step_lf=True),
                 "train_multiclass.runs.resnet50.step_lf: unknown key; did you mean 'step_lr'?"),
    "no_runs": (lambda r: r["train_multiclass"].update(runs={}),
                "train_multiclass.runs: expected a non-empty mapping of run name -> {arch, step_lr, ...}, got {}"),
    "runs_as_list": (lambda r: r["train_multiclass"].update(runs=[{"arch": "resnet18", "step_lr": False}]),
                     "train_multiclass.runs: expected a non-empty mapping of run name -> {arch, step_lr, ...}, "
                     "got [{'arch': 'resnet18', 'step_lr': False}]"),
}


@pytest.mark.parametrize("name", list(CASES))
def test_each_mistake_gives_one_line(raw, name):
    mutate, expected = CASES[name]
    mutate(raw)
    assert problems_of(raw) == [expected]


def test_problems_are_reported_together(raw):
    _rename(raw, "data", "val_fraction", "val_fractoin")
    raw["train_multiclass"]["epochs"] = "ten"
    assert problems_of(raw) == [CASES["typo_val_fractoin"][1], CASES["epochs_text"][1]]


def test_valid_variants_pass(raw):
    raw["train_binary"]["equalize_override"] = "none"  # a choice, distinct from null (= data.equalize)
    raw["train_multiclass"]["device"] = "cuda:1"
    raw["train_multiclass"]["learning_rate"] = 1  # an int where a number is asked
    raw["train_multiclass"]["runs"] = {"only.one-run_2": {"arch": "resnet18", "step_lr": False, "epochs": 2}}
    params = schema.validate_params(raw)
    assert params.train_multiclass.learning_rate == 1.0


def test_non_mapping_is_one_problem():
    with pytest.raises(ValueError, match=r"^params.yaml: 1 problem\n  expected a mapping of sections"):
        schema.validate_params(["seed", 42])


def test_apply_overrides_sets_copies_and_rejects_unknown_keys(raw):
    before = copy.deepcopy(raw)
    out = schema.apply_overrides(raw, {"train_binary.epochs": 5, "data.binary.source": "kermany"})
    assert out["train_binary"]["epochs"] == 5 and out["data"]["binary"]["source"] == "kermany"
    assert raw == before, "the input must not change"
    assert schema.apply_overrides(raw, schema.flatten(raw)) == raw
    with pytest.raises(ValueError) as info:
        schema.apply_overrides(raw, {"train_binary.epoch": 1, "trian_binary.epochs": 2, "seed.x": 3})
    assert str(info.value).splitlines()[1:] == [
        "  train_binary.epoch: unknown key; did you mean 'train_binary.epochs'?",
        "  trian_binary.epochs: unknown key; did you mean 'train_binary.epochs'?",
        "  seed.x: unknown key; 'seed' is a single value, not a section (set it whole)",
    ]
    # One run's setting, as `dvc exp run -S train_multiclass.runs.resnet18.epochs=3` changes it; any run name
    changed = schema.apply_overrides(raw, {"train_multiclass.runs.resnet18.epochs": 3})
    before_run = raw["train_multiclass"]["runs"]["resnet18"]
    assert changed["train_multiclass"]["runs"]["resnet18"] == {**before_run, "epochs": 3}
    schema.validate_params(changed)
    with pytest.raises(ValueError, match=r"train_multiclass\.runs\.resnet18\.epoch: unknown key; did you mean "
                                         r"'train_multiclass\.runs\.resnet18\.epochs'"):
        schema.apply_overrides(raw, {"train_multiclass.runs.resnet18.epoch": 3})


def test_parse_override_reads_the_value_as_yaml():
    assert schema.parse_override("train_multiclass.runs.resnet18.epochs=3") == ("train_multiclass.runs.resnet18.epochs",
                                                                                 3)
    assert schema.parse_override("train_binary.learning_rate=1e-4") == ("train_binary.learning_rate", "1e-4")
    with pytest.raises(ValueError, match="expected key=value"):
        schema.parse_override("train_binary.epochs")


def test_flatten_and_section_keys(raw):
    flat = schema.flatten(schema.validate_params(raw))
    assert flat["data.binary.source"] == raw["data"]["binary"]["source"]
    # a profile's runs replace every run: the mapping stays whole (xraylib exp passes ~key then +key=value)
    assert flat["train_multiclass.runs"]["resnet18"]["arch"] == "resnet18"
    assert schema.is_named_mapping("train_multiclass.runs") and not schema.is_named_mapping("train_multiclass")
    for name in schema.Params.model_fields:
        if isinstance(raw[name], dict):
            assert schema.section_keys(name) == list(raw[name]), f"{name}: schema order differs from params.yaml"
    assert schema.section_keys("train_multiclass.runs") == [
        "arch", "step_lr", "learning_rate", "weights", "image_size", "epochs", "batch_size", "lr_schedule",
        "label_smoothing", "augment", "precise_bn", "channels_last", "cpu_bfloat16", "progressive_resizing"]
    with pytest.raises(KeyError, match="did you mean 'train_binary'"):
        schema.section_keys("train_binery")


def _constant(module: str, name: str):
    """A module-level constant read from the source, so no framework is imported."""
    tree = ast.parse((ROOT / "xraylib" / f"{module}.py").read_text())
    for node in tree.body:
        targets = getattr(node, "targets", None) or [getattr(node, "target", None)]
        if any(isinstance(t, ast.Name) and t.id == name for t in targets):
            if isinstance(node.value, ast.Dict):  # keys only where values are not literals (cv2 constants)
                keys = [ast.literal_eval(k) for k in node.value.keys]
                try:
                    return dict(zip(keys, (ast.literal_eval(v) for v in node.value.values)))
                except ValueError:
                    return dict.fromkeys(keys)
            return ast.literal_eval(node.value)
    raise AssertionError(f"{module}.{name} not found")


def _choices(alias) -> set:
    return set(alias.__args__)


def test_choices_agree_with_the_code():
    assert _choices(schema.MulticlassSource) == set(_constant("data", "SOURCES"))
    assert _choices(schema.BinarySource) <= set(_constant("data", "SOURCES"))
    assert _choices(schema.Split) == set(_constant("data", "SPLITS"))
    assert _choices(schema.ResizeMode) == set(_constant("images", "RESIZE_MODES"))
    assert _choices(schema.EqualizeMode) == set(_constant("images", "EQUALIZE_MODES"))
    assert _choices(schema.Backbone) == set(_constant("tf_model", "BACKBONES"))
    assert _choices(schema.InputNorm) == set(_constant("tf_model", "INPUT_NORMS"))
    assert _choices(schema.Imbalance) == set(_constant("tf_train", "IMBALANCE"))
    assert _choices(schema.TtaMode) == set(_constant("tf_model", "TTA_MODES"))
    assert _choices(schema.FlipMode) == set(_constant("tf_layers", "FLIP_MODES"))
    assert _choices(schema.Arch) == set(_constant("torch_model", "BUILDERS"))
    assert _choices(schema.Colormap) == set(_constant("gradcam_maps", "COLORMAPS"))
    applications = _constant("tf_model", "_APPLICATIONS")
    assert {k: v[2] for k, v in applications.items()} == {k: v for k, v in schema.BACKBONE_MIN_SIZE.items()
                                                          if k != "small_cnn"}


def test_schema_imports_no_framework():
    code = f"import sys, xraylib.schema; print([m for m in {FRAMEWORKS!r} if m in sys.modules])"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT)
    assert out.stdout.strip() == "[]"
