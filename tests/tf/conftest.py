"""Fixtures of the Keras tests. This folder may import TensorFlow, never torch."""

from __future__ import annotations

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import pytest  # noqa: E402

from xraylib import data, synthetic  # noqa: E402


@pytest.fixture(scope="session")
def tiny_manifest(tmp_path_factory):
    """A tiny synthetic binary set (32 px, easy findings) split by patient: DataFrame with a ``split`` column."""
    root = tmp_path_factory.mktemp("tiny_binary")
    synthetic.generate(root, "binary", n_patients={"NORMAL": 14, "PNEUMONIA": 18}, images_per_patient=1,
                       image_size=32, difficulty=0.0, seed=3)
    scan = data.scan_source("folder", root / "chest_xray", progress=False)
    return data.assign_splits(scan.manifest, val_fraction=0.25, test_fraction=0.25, seed=0)


@pytest.fixture(scope="session")
def tiny_class_names(tiny_manifest):
    return data.class_names(tiny_manifest)
