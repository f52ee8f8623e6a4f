"""Settings for the PyTorch tests: params.yaml's values, changed only where a test says so.

``from tests.torch.helpers import run_config``. params.yaml is read from this repository
(not the working directory, which some tests change).
"""

from __future__ import annotations

from pathlib import Path

from xraylib import config

PARAMS_FILE = Path(__file__).resolve().parents[2] / "params.yaml"


def study_params() -> dict:
    """The repository's params.yaml, validated."""
    return config.load_params(PARAMS_FILE)


def run_config(name: str, arch: str, *, step_lr: bool = False, **overrides):
    """One :class:`xraylib.torch_train.RunConfig`: the study's shared settings with a test's overrides.

    ``step_lr`` is part of each run entry in params.yaml; a test's run has none unless it says so.
    """
    from xraylib import torch_train

    # One torch thread unless a test says otherwise: the tests' models are tiny (threads cost more than they give)
    # and CI's cores are shared; every bit-exact comparison in the tests is between runs of the same process.
    settings = {**torch_train.shared_settings(study_params()), "num_threads": 1, **overrides}
    return torch_train.build_configs({name: {"arch": arch, "step_lr": step_lr}}, **settings)[0]
