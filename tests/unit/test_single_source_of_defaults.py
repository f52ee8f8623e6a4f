"""params.yaml is the single source of defaults: no notebook, config class or reader keeps a second set.

Framework-free: the notebooks are read as JSON, the modules that import TensorFlow or torch are
parsed with ``ast``, never imported.
"""

from __future__ import annotations

import ast
import json
from pathlib import Path

import pytest

from xraylib import cli, config

ROOT = Path(__file__).resolve().parents[2]  # the repository these tests belong to
PACKAGE = ROOT / "xraylib"


@pytest.fixture(scope="module")
def params() -> dict:
    return config.load_params(ROOT / "params.yaml")


def _parameters_cell(notebook: Path) -> dict:
    """``{name: value}`` of the notebook's ``parameters`` cell; each line must be a plain assignment."""
    cells = json.loads(notebook.read_text())["cells"]
    tagged = [c for c in cells if "parameters" in c.get("metadata", {}).get("tags", [])]
    assert len(tagged) == 1, f"{notebook.name}: expected one cell tagged 'parameters', found {len(tagged)}"
    values = {}
    for node in ast.parse("".join(tagged[0]["source"])).body:
        assert isinstance(node, ast.Assign) and len(node.targets) == 1 and isinstance(node.targets[0], ast.Name), (
            f"{notebook.name}: parameters cell line {node.lineno} is not 'name = plain value'")
        values[node.targets[0].id] = ast.literal_eval(node.value)
    return values


def _same(a, b) -> bool:
    """Equal values of equal types, all the way down (``1 != 1.0``, ``True != 1``, ``None`` only equals ``None``)."""
    if type(a) is not type(b):
        return False
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    if isinstance(a, (list, tuple)):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b))
    return a == b


@pytest.mark.parametrize("stage", list(cli.NOTEBOOKS))
def test_notebook_parameters_equal_what_params_yaml_injects(stage, params):
    """The values a notebook shows in its parameters cell are exactly those `xraylib notebook` injects."""
    notebook = ROOT / "notebooks" / cli.NOTEBOOKS[stage]
    declared = _parameters_cell(notebook)
    injected = cli.notebook_parameters(stage, params, notebook)  # raises when a parameter is not in params.yaml
    assert injected.keys() == declared.keys()
    differ = {name: (declared[name], injected[name]) for name in declared if not _same(declared[name], injected[name])}
    assert not differ, f"{notebook.name}: parameters cell (notebook value, params.yaml value) disagree: {differ}"
    # And the whole stage section reaches the notebook: no key of params.yaml is left unused there.
    unused = sorted(set(params[stage]) - set(declared))
    assert not unused, f"{notebook.name} does not declare {stage}.{unused} of params.yaml"


def test_a_notebook_parameter_missing_from_params_yaml_is_an_error(params, tmp_path):
    source = json.loads((ROOT / "notebooks" / cli.NOTEBOOKS["explore"]).read_text())
    cell = next(c for c in source["cells"] if "parameters" in c.get("metadata", {}).get("tags", []))
    cell["source"] = ["samples_per_class = 6\n", "zoom = 0.1\n"]
    notebook = tmp_path / "01_explore.ipynb"
    notebook.write_text(json.dumps(source))
    with pytest.raises(ValueError, match=r"01_explore.ipynb declares parameter\(s\) \['zoom'\] that params.yaml"):
        cli.notebook_parameters("explore", params, notebook)
    with pytest.raises(KeyError, match="parameter 'explore' is missing"):
        cli.notebook_parameters("explore", {k: v for k, v in params.items() if k != "explore"}, notebook)


# --------------------------------------------------------------------------------------------------
# Config classes and builders: no defaults for params.yaml keys (read with ast, nothing imported)
# --------------------------------------------------------------------------------------------------
def _keys(params: dict, *sections: str) -> set[str]:
    """Key names of the given sections (dotted; ``runs`` = a run entry); ``""`` = top-level values (seed)."""
    keys: set[str] = set()
    for name in sections:
        if name == "":
            keys |= {k for k, v in params.items() if not isinstance(v, dict)}
        elif name == "train_multiclass.runs":
            keys |= {k for run in params["train_multiclass"]["runs"].values() for k in run} | {"name"}  # the key
        else:
            keys |= set(config.section(params, name))
    return keys


# Config dataclass -> the params.yaml sections its fields come from.
CONFIG_SECTIONS = {
    ("tf_train.py", "TrainConfig"): ("train_binary", ""),
    ("torch_train.py", "RunConfig"): ("train_multiclass", "train_multiclass.runs", "data", ""),
}
# Builders called with params.yaml values -> their sections; an argument named like a key has no default.
# augmentation_layers' factors are train_binary.augment_<factor>.
FUNCTION_SECTIONS = {
    ("tf_model.py", "build_model"): ("train_binary", ""),
    ("tf_layers.py", "augmentation_layers"): ("train_binary", ""),
}
AUGMENT_PREFIX = "augment_"


def _tree(module: str) -> ast.Module:
    return ast.parse((PACKAGE / module).read_text(), filename=module)


def _is_dataclass(node: ast.ClassDef) -> bool:
    for deco in node.decorator_list:
        target = deco.func if isinstance(deco, ast.Call) else deco
        name = target.attr if isinstance(target, ast.Attribute) else getattr(target, "id", "")
        if name == "dataclass":
            return True
    return False


def _dataclass_defaults(module: str) -> dict[str, dict[str, str]]:
    """``{class name: {field: default source}}`` of every dataclass in a module."""
    found = {}
    for node in ast.walk(_tree(module)):
        if isinstance(node, ast.ClassDef) and _is_dataclass(node):
            found[node.name] = {item.target.id: ast.unparse(item.value) for item in node.body
                                if isinstance(item, ast.AnnAssign) and isinstance(item.target, ast.Name)
                                and item.value is not None}
    return found


def test_every_config_dataclass_is_checked():
    """A new ``*Config`` dataclass in xraylib must be listed in CONFIG_SECTIONS (and so be checked below)."""
    configs = {(path.name, name) for path in sorted(PACKAGE.glob("*.py"))
               for name in _dataclass_defaults(path.name) if name.endswith("Config")}
    assert configs == set(CONFIG_SECTIONS)


@pytest.mark.parametrize("module, name", list(CONFIG_SECTIONS), ids=[n for _, n in CONFIG_SECTIONS])
def test_config_dataclasses_have_no_defaults_for_params_keys(module, name, params):
    defaults = _dataclass_defaults(module)
    assert name in defaults, f"{module} has no dataclass {name}"
    keys = _keys(params, *CONFIG_SECTIONS[(module, name)])
    second = {field: value for field, value in defaults[name].items() if field in keys}
    assert not second, (f"{module}::{name} declares defaults for params.yaml keys {second}; params.yaml is the one "
                        "source of defaults: make the fields required and build the config from the params")


@pytest.mark.parametrize("module, name", list(FUNCTION_SECTIONS), ids=[n for _, n in FUNCTION_SECTIONS])
def test_builders_have_no_defaults_for_params_keys(module, name, params):
    function = next((node for node in ast.walk(_tree(module))
                     if isinstance(node, ast.FunctionDef) and node.name == name), None)
    assert function is not None, f"{module} has no function {name}"
    args = function.args
    positional = args.posonlyargs + args.args
    defaults = dict(zip([a.arg for a in positional[len(positional) - len(args.defaults):]], args.defaults))
    defaults.update({a.arg: d for a, d in zip(args.kwonlyargs, args.kw_defaults) if d is not None})
    keys = _keys(params, *FUNCTION_SECTIONS[(module, name)])
    second = {arg: ast.unparse(value) for arg, value in defaults.items()
              if arg in keys or AUGMENT_PREFIX + arg in keys}
    assert not second, f"{module}::{name} has defaults for params.yaml keys: {second}"


# Functions that read params sections: none may fall back to a value of its own with .get(key, default).
READERS = {
    "torch_train.py": ("shared_settings", "configs_from_params"),
    "cli.py": ("notebook_parameters", "load_params"),
    "tf_train.py": ("from_params",),
    "data.py": ("build_manifest",),
}


@pytest.mark.parametrize("module", list(READERS))
def test_params_readers_have_no_fallback_values(module, params):
    keys = {key for section in ("data", "train_binary", "train_multiclass", "gradcam", "explore", "preprocess",
                                "synthesize") for key in params[section]} | set(params)
    functions = {node.name: node for node in ast.walk(_tree(module)) if isinstance(node, ast.FunctionDef)}
    for name in READERS[module]:
        assert name in functions, f"{module} has no function {name}"
        for node in ast.walk(functions[name]):
            if (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "get"
                    and node.args and isinstance(node.args[0], ast.Constant) and node.args[0].value in keys):
                pytest.fail(f"{module}::{name} line {node.lineno}: {ast.unparse(node)} reads a params.yaml key with "
                            "a fallback; the schema guarantees the key, read it with [...]")
