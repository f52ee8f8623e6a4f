"""Each notebook stage in dvc.yaml depends on exactly the xraylib modules its notebook runs.

Hand-kept dependency lists go stale (a stage ran xraylib/data.py without listing it, so
a change there did not re-run it). The rule, checked here: a notebook stage's
``xraylib/*.py`` deps are the modules the notebook imports, closed over their own
imports (also inside functions) and over modules they name as ``"xraylib.<name>"``: the code a
subprocess runs (notebook 05's Keras Grad-CAM, ``python -m xraylib cams``, runs xraylib.tf_gradcam).
The runner (``xraylib notebook``, cli.py) is not counted: it passes parameters, which DVC tracks as params.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import yaml

from tests import import_graph
from xraylib import cli

ROOT = Path(__file__).resolve().parents[2]


def modules_run_by(notebook: Path) -> set[str]:
    cells = json.loads(notebook.read_text())["cells"]
    source = "\n".join("".join(c["source"]) for c in cells if c["cell_type"] == "code")
    return import_graph.closure(import_graph.referenced(source, run_targets=True), run_targets=True)


@pytest.mark.parametrize("stage", list(cli.NOTEBOOKS))
def test_stage_deps_are_the_modules_its_notebook_runs(stage):
    spec = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"][stage]
    listed = {Path(d).stem for d in spec["deps"] if re.fullmatch(r"xraylib/\w+\.py", d)}
    needed = modules_run_by(ROOT / "notebooks" / cli.NOTEBOOKS[stage])
    assert not needed - listed, f"{stage}: add to deps in dvc.yaml: {sorted(f'xraylib/{m}.py' for m in needed - listed)}"
    assert not listed - needed, f"{stage}: deps in dvc.yaml its notebook does not run: {sorted(listed - needed)}"


def test_the_closure_follows_subprocess_modules():
    assert {"gradcam_sets", "tf_gradcam", "torch_gradcam", "tf_model"} <= modules_run_by(
        ROOT / "notebooks" / cli.NOTEBOOKS["gradcam"])


def test_run_stage_deps_are_the_modules_its_command_runs():
    """train_run@<run> (a foreach over train_multiclass.runs) runs `xraylib train-run`: cli.cmd_train_run."""
    import inspect

    spec = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]["train_run"]
    assert spec["foreach"] == "${train_multiclass.runs}" and spec["do"]["cmd"] == "python -m xraylib train-run ${key}"
    listed = {Path(d).stem for d in spec["do"]["deps"] if re.fullmatch(r"xraylib/\w+\.py", d)}
    needed = import_graph.closure(import_graph.referenced(inspect.getsource(cli.cmd_train_run)))
    assert not needed - listed, f"train_run: add to deps: {sorted(f'xraylib/{m}.py' for m in needed - listed)}"
    assert not listed - needed, f"train_run: deps its command does not run: {sorted(listed - needed)}"


def test_run_stage_params_are_the_shared_keys_and_its_own_run():
    """Editing one run re-runs only its stage: the shared keys are listed one by one, train_multiclass.runs never
    whole; and every key a run is built from is listed."""
    from xraylib import schema

    spec = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]["train_run"]["do"]
    params = spec["params"]
    assert "train_multiclass" not in params and "train_multiclass.runs" not in params
    assert "train_multiclass.runs.${key}" in params
    shared = {f"train_multiclass.{key}" for key in schema.section_keys("train_multiclass") if key != "runs"}
    assert shared | {"seed", "data.resize", "data.equalize", "train_multiclass.runs.${key}"} == set(params)
