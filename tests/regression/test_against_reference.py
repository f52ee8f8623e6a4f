"""A re-run of the study (in a scratch copy, possibly under another numeric path) against the committed reference.

Exactly determined outputs must be equal; training figures must lie within the
tolerances of ``tolerances.yaml``. ``xraylib regression`` runs the study and this
comparison; these tests repeat the comparison so that pytest reports each part.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from xraylib import regression

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]


@pytest.fixture(scope="module")
def reference() -> dict:
    return json.loads((HERE / "reference.json").read_text())


def test_exactly_determined_outputs_are_equal(regression_dir, reference):
    problems = regression.compare_exact(regression.exact_outputs(regression_dir / "reports" / "metrics"),
                                        reference["exact"])
    assert not problems, "\n".join(problems)


def test_training_figures_within_measured_tolerances(regression_dir, reference):
    tolerances = regression.load_tolerances(HERE / "tolerances.yaml")
    problems = regression.compare(regression.headline(regression_dir / "reports" / "metrics"),
                                  reference["headline"], tolerances)
    assert not problems, "\n".join(problems)


@pytest.mark.parametrize("folder", ["explore", "preprocess"])
def test_data_figures_match_the_committed_ones(regression_dir, folder):
    """Figures drawn from the data alone (no training) are exactly determined: same pixels as committed."""
    committed = sorted((ROOT / "reports" / "figures" / folder).glob("*.png"))
    assert committed, f"no committed figures in reports/figures/{folder}"
    for path in committed:
        rerun = regression_dir / "reports" / "figures" / folder / path.name
        assert rerun.is_file(), f"the re-run did not draw {folder}/{path.name}"
        a = np.asarray(Image.open(path).convert("RGB"), dtype=np.int16)
        b = np.asarray(Image.open(rerun).convert("RGB"), dtype=np.int16)
        assert a.shape == b.shape, f"{folder}/{path.name}: size {b.shape} vs committed {a.shape}"
        assert np.abs(a - b).max() == 0, f"{folder}/{path.name}: pixels differ from the committed figure"


def test_training_figures_are_drawn(regression_dir):
    """Figures of trained models differ in detail between numeric paths; each must exist and be a real image."""
    for folder in ("train_binary", "train_multiclass", "gradcam"):
        committed = {p.name for p in (ROOT / "reports" / "figures" / folder).glob("*.png")}
        drawn = {p.name for p in (regression_dir / "reports" / "figures" / folder).glob("*.png")}
        assert committed <= drawn, f"{folder}: not drawn by the re-run: {sorted(committed - drawn)}"
        for name in drawn:
            with Image.open(regression_dir / "reports" / "figures" / folder / name) as image:
                assert min(image.size) >= 100 and np.asarray(image.convert("L")).std() > 1, name
