"""Project wiring: environment files agree, framework-free imports, params <-> notebooks <-> dvc.yaml."""

from __future__ import annotations

import json
import re
import subprocess
import sys

import papermill
import pytest
import yaml

from tests import import_graph
from xraylib import cli, config

FRAMEWORK_FREE = ["xraylib", "xraylib.config", "xraylib.data", "xraylib.images", "xraylib.metrics",
                  "xraylib.plots", "xraylib.synthetic", "xraylib.cli", "xraylib.gradcam_maps", "xraylib.gradcam_scores",
                  "xraylib.gradcam_sets", "xraylib.gradcam_figures", "xraylib.gradcam_overlays", "xraylib.errors",
                  "xraylib.model_files", "xraylib.schema", "xraylib.inference", "xraylib.evaluation",
                  "xraylib.statistics", "xraylib.calibration", "xraylib.gradcam_faithfulness", "xraylib.model_card",
                  "xraylib.model_card_sections", "xraylib.shortcuts", "xraylib.dataset_shift", "xraylib.site_calibration"]


def test_framework_free_modules_import_no_framework():
    modules = [m for m in FRAMEWORK_FREE if (config.PROJECT_ROOT / (m.replace(".", "/") + ".py")).exists()
               or m == "xraylib"]
    code = ("import sys\n" + "".join(f"import {m}\n" for m in modules)
            + "print([f for f in ('tensorflow', 'keras', 'torch', 'torchvision') if f in sys.modules])")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]", f"framework imported by {modules}: {out.stdout}"


def test_no_import_cycles_in_the_package():
    """Counting imports inside functions too: no module reaches itself through its imports."""
    modules = [p.stem for p in import_graph.PACKAGE.glob("*.py")]
    cyclic = [m for m in modules if m in import_graph.closure(import_graph.module_imports(m))]
    assert not cyclic, f"import cycle through {cyclic}"


@pytest.mark.parametrize("module, forbidden", [
    ("xraylib.torch_gradcam", ("xraylib.torch_evaluate", "xraylib.torch_train")),
    ("xraylib.tf_gradcam", ("xraylib.tf_evaluate", "xraylib.tf_train")),
])
def test_gradcam_modules_load_no_training_or_evaluation_module(module, forbidden):
    """Grad-CAM needs a model and its inference, never the training or evaluation code (no upward imports)."""
    code = f"import sys, {module}; print(sorted(m for m in sys.modules if m.startswith('xraylib.')))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         env={**__import__("os").environ, "TF_CPP_MIN_LOG_LEVEL": "3"})
    loaded = json.loads(out.stdout.strip().splitlines()[-1].replace("'", '"'))
    assert module in loaded and not set(forbidden) & set(loaded), loaded


def test_framework_modules_import_only_their_framework():
    for path in sorted((config.PROJECT_ROOT / "xraylib").glob("*.py")):
        text = path.read_text()
        tf = re.search(r"^\s*(import|from) (tensorflow|keras)\b", text, re.M)
        torch = re.search(r"^\s*(import|from) (torch|torchvision|pytorch_grad_cam)\b", text, re.M)
        assert not (tf and torch), f"{path.name} imports both frameworks"
        if tf:
            assert path.name.startswith("tf_"), f"{path.name} imports TensorFlow but is not a tf_ module"
        if torch:
            assert path.name.startswith("torch_"), f"{path.name} imports torch but is not a torch_ module"


@pytest.mark.parametrize("stage", list(cli.NOTEBOOKS))
def test_notebook_parameters_exist_in_params(stage):
    notebook = config.NOTEBOOKS_DIR / cli.NOTEBOOKS[stage]
    if not notebook.exists():
        pytest.skip(f"{notebook.name} not written yet")
    params = config.load_params()
    declared = papermill.inspect_notebook(str(notebook))
    values = cli.notebook_parameters(stage, params, notebook)
    missing = sorted(set(declared) - set(values))
    assert not missing, f"{notebook.name} parameters not in params.yaml: {missing}"
    for name, value in values.items():
        default = declared[name]["default"]
        assert yaml.safe_load(default) == value or default.strip("'\"") == str(value), (
            f"{notebook.name}: parameter {name} default {default} differs from params.yaml {value!r}")


def test_notebooks_have_house_shape():
    for name in cli.NOTEBOOKS.values():
        path = config.NOTEBOOKS_DIR / name
        if not path.exists():
            continue
        nb = json.loads(path.read_text())
        cells = nb["cells"]
        assert cells[0]["cell_type"] == "markdown" and cells[0]["source"][0].startswith("# "), f"{name}: title first"
        tagged = [c for c in cells if "parameters" in c.get("metadata", {}).get("tags", [])]
        assert len(tagged) == 1, f"{name}: exactly one parameters cell"
        code = "".join("".join(c["source"]) for c in cells if c["cell_type"] == "code")
        assert not re.search(r"^\s*def ", code, re.M), f"{name}: functions belong in xraylib"
        assert "!pip" not in code and "%pip" not in code
        assert nb["metadata"]["kernelspec"]["name"] == "xraylib"


def test_dvc_stages_share_names_with_params_and_notebooks():
    stages = yaml.safe_load((config.PROJECT_ROOT / "dvc.yaml").read_text())["stages"]
    params = config.load_params()
    for stage, spec in stages.items():
        if stage in cli.NOTEBOOKS:
            assert spec["cmd"] == f"python -m xraylib notebook {stage}"
            assert f"notebooks/{cli.NOTEBOOKS[stage]}" in spec["deps"]
        for entry in spec.get("params", []):
            key = entry if isinstance(entry, str) else next(iter(entry))
            config.section(params, key)  # raises KeyError naming the key when absent


def test_profiles_override_existing_keys():
    params = config.load_params()
    profiles = sorted(config.PROFILES_DIR.glob("*.yaml"))
    for path in profiles:
        for key in cli.profile_overrides(path.stem):
            config.section(params, key)


def test_unknown_profile_lists_available():
    with pytest.raises(FileNotFoundError, match="available"):
        cli.profile_overrides("no_such_profile")


def test_cli_errors_are_clear(tmp_path, capsys):
    assert cli.main(["evaluate", str(tmp_path / "missing.keras"), str(tmp_path)]) == 2
    assert "not found" in capsys.readouterr().err
    (tmp_path / "m.onnx").write_text("x")
    assert cli.main(["predict", str(tmp_path / "m.onnx"), str(tmp_path)]) == 2
    assert "expected a .keras" in capsys.readouterr().err
    bad = tmp_path / "p.yaml"
    bad.write_text("seed: 1\n")
    assert cli.main(["--params", str(bad), "prepare", "binary"]) == 2
    err = capsys.readouterr().err
    assert "p.yaml: 7 problems" in err and "  data: missing (p.yaml must define it)" in err
    assert "Traceback" not in err


def test_download_fails_fast_with_instructions(tmp_path, monkeypatch, capsys):
    import kagglehub

    def offline(*args, **kwargs):
        raise ConnectionError("network is unreachable")

    monkeypatch.setattr(kagglehub, "dataset_download", offline)
    with pytest.raises(SystemExit, match="needs internet access and Kaggle credentials"):
        cli.main(["download", "kermany", "--out", str(tmp_path)])
    assert cli.KAGGLE_DATASETS["kermany"] == "paultimothymooney/chest-xray-pneumonia"
