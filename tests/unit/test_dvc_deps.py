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
